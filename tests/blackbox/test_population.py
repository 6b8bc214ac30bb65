"""The batched population evaluator equals one candidate at a time and the uncached reference."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from pluralign.blackbox import country_target
from pluralign.blackbox.population import PopulationConfig, PopulationEvaluator, in_context_system
from pluralign.errors import PluralignError
from pluralign.data.loaders.hofstede import DIMENSIONS


def test_batched_equals_one_at_a_time_and_uncached(tiny_llama, tiny_tokenizer, tiny_evaluator, short_vsm):
    torch.manual_seed(0)
    X = torch.randn(3, 3, 64) * 0.5
    assert tiny_evaluator.prefix_len > 0  # the chat header is shared by all 24 prompts
    batched = tiny_evaluator.label_logprobs(X)
    single = torch.stack([tiny_evaluator.label_logprobs(X[i : i + 1])[0] for i in range(3)])
    ref = PopulationEvaluator.from_questionnaire(
        tiny_llama, tiny_tokenizer, cfg=PopulationConfig(tokens=3, batch_size=20, prefix_cache=False), questionnaire=short_vsm)
    uncached = ref.label_logprobs(X)
    assert batched.shape == (3, 24, 5)
    assert torch.allclose(batched, single, atol=1e-4)
    assert torch.allclose(batched, uncached, atol=1e-4)
    # different candidates give different answers
    assert (batched[0] - batched[1]).abs().max() > 1e-3


def test_memo_reuses_scores(tiny_llama, tiny_tokenizer, short_vsm):
    ev = PopulationEvaluator.from_questionnaire(tiny_llama, tiny_tokenizer, cfg=PopulationConfig(tokens=2, memo=8), questionnaire=short_vsm)
    X = torch.randn(2, 2, 64)
    a = ev.evaluate(X).probs
    n = ev.n_forward
    b = ev.evaluate(X[[1, 0]]).probs
    assert ev.n_forward == n and ev.memo_hits == 2
    assert np.allclose(a[[1, 0]], b)


def test_result_fields_and_low_mass_reported(tiny_evaluator, caplog):
    X = np.random.default_rng(0).normal(size=(2, 3 * 64)).astype(np.float32) * 0.3
    with caplog.at_level(logging.WARNING):
        r = tiny_evaluator.evaluate(X, country_target("USA"))
    assert r.probs.shape == (2, 1, 24, 5) and np.allclose(r.probs.sum(-1), 1)
    assert r.means.shape == (2, 24) and np.all((r.means >= 1) & (r.means <= 5))
    assert r.scores.shape == (2, 6) and r.loss.shape == (2,)
    # a random tiny model puts little mass on the labels: reported, not crashed
    assert np.all(r.mean_mass < 0.05)


def test_contexts_average_and_validation(tiny_llama, tiny_tokenizer):
    ev = PopulationEvaluator.from_questionnaire(
        tiny_llama, tiny_tokenizer, cfg=PopulationConfig(tokens=0, contexts=(None, in_context_system("CHN"))))
    r = ev.evaluate(torch.zeros(1, 0, 64))
    assert r.probs.shape == (1, 2, 24, 5)
    exp = (r.probs @ np.arange(1, 6)).mean(1)
    assert np.allclose(r.means, exp)
    with pytest.raises(PluralignError):
        ev.as_prompts(np.zeros((2, 65)))
    assert "China" in in_context_system("CHN")


def test_prefix_groups_save_the_most_tokens():
    from pluralign.blackbox.population import prefix_groups

    a, b, c = [1, 2, 3, 4], [7, 8], [5, 5, 5]
    suffixes = [a + [10], a + [11, 12], a + [13], b + [20, 21], b + [22], c + [30], [40, 41]]
    assert prefix_groups(suffixes) == [([0, 1, 2], 4), ([3, 4], 2)]
    # a longer stem shared by fewer prompts wins when it saves more: 2 x 6 > 3 x 1 + ...
    long = [[9] + [1] * 6 + [2], [9] + [1] * 6 + [3], [9, 4, 5]]
    assert prefix_groups(long) == [([0, 1], 7)]
    assert prefix_groups([[1, 2], [3, 4]]) == []  # nothing shared: no groups
    assert prefix_groups([[1, 1, 1], [1, 1, 1]]) == [([0, 1], 2)]  # each keeps one token after its stem
    # a one-token stem (below the minimum) shared by all does not hide the longer stems of subsets
    assert prefix_groups([[0, 1, 1, 1, 5], [0, 1, 1, 1, 6], [0, 2, 2, 7], [0, 2, 2, 8], [0, 3]]) == [([0, 1], 4), ([2, 3], 3)]


def test_group_stems_are_exact_and_save_tokens(tiny_llama, tiny_tokenizer, short_vsm):
    torch.manual_seed(1)
    X = torch.randn(3, 2, 64) * 0.5
    grouped = PopulationEvaluator.from_questionnaire(tiny_llama, tiny_tokenizer, cfg=PopulationConfig(tokens=2, batch_size=17),
                                                     questionnaire=short_vsm)
    prefix_only = PopulationEvaluator.from_questionnaire(tiny_llama, tiny_tokenizer, cfg=PopulationConfig(tokens=2, group_cache=False),
                                                         questionnaire=short_vsm)
    assert grouped.groups and not prefix_only.groups  # the items repeat their first word every 12 items
    a, b = grouped.label_logprobs(X), prefix_only.label_logprobs(X)
    assert torch.allclose(a, b, atol=1e-4)
    assert grouped.tokens_run < prefix_only.tokens_run
    # bf16 matrix products (opt-in): close to fp32, not equal
    ac = PopulationEvaluator.from_questionnaire(tiny_llama, tiny_tokenizer, cfg=PopulationConfig(tokens=2, autocast="bf16"),
                                                questionnaire=short_vsm)
    c = ac.label_logprobs(X)
    assert c.dtype == torch.float32 and torch.allclose(c, b, atol=0.1)


def test_rescore_exact_gives_the_fp32_score_of_a_prompt_a_bf16_search_found(tiny_llama, tiny_tokenizer):
    """A bf16 search's best prompt is re-scored without autocast: the result is the fp32 evaluator's,
    whatever the search's evaluator was set to."""
    from pluralign.blackbox.population import rescore_exact

    target = country_target("USA")
    torch.manual_seed(2)
    prompt = torch.randn(2, 64) * 0.5
    bf16 = PopulationConfig(tokens=2, batch_size=48, autocast="bf16", memo=16)
    ex = rescore_exact(tiny_llama, tiny_tokenizer, prompt, target, cfg=bf16)
    fp32 = PopulationEvaluator.from_questionnaire(tiny_llama, tiny_tokenizer, cfg=PopulationConfig(tokens=2, batch_size=48)).evaluate(prompt[None], target)
    approx = PopulationEvaluator.from_questionnaire(tiny_llama, tiny_tokenizer, cfg=bf16).evaluate(prompt[None], target)
    assert ex["loss"] == pytest.approx(float(fp32.loss[0]), abs=1e-9)
    assert ex["scores"] == pytest.approx(dict(zip(DIMENSIONS, fp32.scores[0].tolist())))
    assert ex["loss"] != float(approx.loss[0])  # the bf16 objective differs from the exact one
    with pytest.raises(PluralignError):
        rescore_exact(tiny_llama, tiny_tokenizer, prompt[None], target, cfg=bf16)


def test_reworded_check_scores_naive_and_the_prompt_on_other_items(tiny_llama, tiny_tokenizer, short_vsm):
    """reworded_check = the evaluator on the other questionnaire, without and with the prompt, and
    the share of the searched reduction that survives."""
    import dataclasses

    from pluralign.blackbox.population import reworded_check
    from pluralign.data.loaders.hofstede import VSMQuestionnaire, country_target

    other = VSMQuestionnaire(items=tuple(dataclasses.replace(i, text=f"other words {n}?") for n, i in enumerate(short_vsm.items)),
                             terms=short_vsm.terms)
    target = country_target("USA")
    torch.manual_seed(0)
    hidden = tiny_llama.get_input_embeddings().weight.shape[1]
    prompt = torch.randn(3, hidden) * 0.5
    cfg = PopulationConfig(tokens=3, batch_size=48)
    rw = reworded_check(tiny_llama, tiny_tokenizer, prompt, target, cfg=cfg, questionnaire=other,
                        searched={"naive": 30.0, "prompt": 20.0})
    direct = PopulationEvaluator.from_questionnaire(tiny_llama, tiny_tokenizer, cfg=cfg, questionnaire=other).evaluate(prompt[None], target)
    naive = PopulationEvaluator.from_questionnaire(tiny_llama, tiny_tokenizer, cfg=dataclasses.replace(cfg, tokens=0),
                                                   questionnaire=other).evaluate(prompt[:0][None], target)
    assert rw["prompt"]["loss"] == pytest.approx(float(direct.loss[0]))
    assert rw["naive"]["loss"] == pytest.approx(float(naive.loss[0]))
    assert rw["prompt"]["loss"] != pytest.approx(rw["naive"]["loss"])  # the prompt changes the answers
    assert rw["kept"] == pytest.approx((rw["naive"]["loss"] - rw["prompt"]["loss"]) / 10.0)
    assert rw["searched"]["reduction"] == pytest.approx(1 / 3)
    with pytest.raises(PluralignError):
        reworded_check(tiny_llama, tiny_tokenizer, prompt[None], target, cfg=cfg, questionnaire=other)


def test_bf16_autocast_warns_once_on_a_cpu_without_bf16_instructions(tiny_llama, tiny_tokenizer, short_vsm, monkeypatch, caplog):
    """bf16 products are emulated on AVX2-only CPUs (about 5x slower than fp32 there): the user is told."""
    from pluralign.blackbox import population

    zen3 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n"
    spr = "flags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
    assert population.cpu_bf16_native(zen3) is False and population.cpu_bf16_native(spr) is True
    assert population.cpu_bf16_native("no flags here") is None
    monkeypatch.setattr(population, "cpu_bf16_native", lambda: False)
    monkeypatch.setattr(population, "_BF16_CPU_CHECKED", False)
    ev = PopulationEvaluator.from_questionnaire(tiny_llama, tiny_tokenizer, cfg=PopulationConfig(tokens=2, autocast="bf16"),
                                                questionnaire=short_vsm)
    X = torch.randn(2, 2, tiny_llama.config.hidden_size) * 0.02
    with caplog.at_level(logging.WARNING, logger="pluralign.blackbox.population"):
        ev.label_logprobs(X)
        ev.label_logprobs(X)
    warned = [r for r in caplog.records if "AVX512-BF16" in r.getMessage()]
    assert len(warned) == 1 and "autocast=off" in warned[0].getMessage()
    reads = []
    monkeypatch.setattr(population, "cpu_bf16_native", lambda: reads.append(1) or True)  # a CPU with the instructions: no warning
    monkeypatch.setattr(population, "_BF16_CPU_CHECKED", False)
    caplog.clear()
    ev.label_logprobs(X)
    ev.label_logprobs(X)
    assert not [r for r in caplog.records if "AVX512-BF16" in r.getMessage()]
    assert len(reads) == 1  # the flags are read once, not on every evaluation
