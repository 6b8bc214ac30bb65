"""The three read-outs (issue 12): logprob, verbalized (stub generator with fixed text), sampled."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pluralign.data import GroupExample, Profile, SurveyDataset, SurveyItem
from pluralign.evaluation.readouts import HFGenerator, parse_choice, parse_verbalized, verbal_instruction
from pluralign.evaluation.runner import EvalConfig, evaluate

Q1 = SurveyItem("q1", "How important is family in your life?", ("Very important", "Rather important", "Not important"))
Q2 = SurveyItem("q2", "Which do you prefer?", ("agree", "disagree"), ordinal=False)
LABS = ["1", "2", "3"]
OPTS = list(Q1.options)


@pytest.mark.parametrize(
    "text, want, status",
    [
        ('{"1": 50, "2": 30, "3": 20}', [0.5, 0.3, 0.2], "ok"),
        ("Sure! Here it is: {'1': '50%', '2': '30%', '3': '20%'} Hope it helps.", [0.5, 0.3, 0.2], "ok"),
        ('{1: 50, 2: 30, 3: 20,}', [0.5, 0.3, 0.2], "ok"),  # bare keys, trailing comma
        ('```json\n{"Very important": 60, "Rather important": 40, "Not important": 0}\n```', [0.6, 0.4, 0.0], "ok"),
        ('{"Option 1": 25, "Option 2": 25, "Option 3": 50}', [0.25, 0.25, 0.5], "ok"),
        ('{"1. Very important": 10, "2. Rather important": 10, "3. Not important": 80}', [0.1, 0.1, 0.8], "ok"),
        ('{"1": 0.2, "2": 0.2, "3": 0.6}', [0.2, 0.2, 0.6], "ok"),  # fractions are renormalised too
        ('{"1": 60, "2": 40', [0.6, 0.4, 0.0], "partial"),  # cut off by the token limit
        ("1: 70%, 2: 20%, 3: 10%", [0.7, 0.2, 0.1], "ok"),  # no braces
        ("[10, 30, 60]", [0.1, 0.3, 0.6], "ok"),  # a bare list in option order
        ('{"1": 30, "2": 30, "3": 30}', [1 / 3] * 3, "ok"),  # sums to 90: renormalised
        ("I think most people would say 2.", None, "no_json"),
        ('{"yes": 50, "no": 50}', None, "no_options"),
        ('{"1": -5, "2": 105}', None, "bad_value"),
        ('{"1": 0, "2": 0, "3": 0}', None, "zero_total"),
        ("", None, "no_json"),
    ],
)
def test_parse_verbalized(text, want, status):
    p, st = parse_verbalized(text, LABS, OPTS)
    assert st == status
    if want is None:
        assert p is None
    else:
        np.testing.assert_allclose(p, want, atol=1e-12)


@pytest.mark.parametrize(
    "text, want",
    [("2", 1), (" 3.", 2), ("(1) Very important", 0), ("Answer: 2", 1), ("Rather important, I guess", 1),
     ("I would pick 3 here", 2), ("hmm", None), ("7", None), ("", None)],
)
def test_parse_choice(text, want):
    assert parse_choice(text, LABS, OPTS) == want


def test_parse_choice_letters_ignore_the_article():
    assert parse_choice("A lot of people say B.", ["A", "B", "C"], ["x", "y", "z"]) == 1
    assert parse_choice("C", ["A", "B", "C"], ["x", "y", "z"]) == 2


class StubGenerator:
    """Returns fixed text; records what it was asked."""

    def __init__(self, reply):
        self.reply = reply
        self.prompts: list[str] = []
        self.calls: list[dict] = []

    def generate_texts(self, prompts, *, max_new_tokens, num_samples, do_sample, temperature, seed):
        self.prompts += list(prompts)
        self.calls.append({"n": num_samples, "do_sample": do_sample, "temperature": temperature, "seed": seed, "max_new": max_new_tokens})
        return [[self.reply(p, s) for s in range(num_samples)] for p in prompts]


@pytest.fixture()
def test_ds():
    rng = np.random.default_rng(0)
    exs = [GroupExample(c, Profile(country=c), it.id, tuple(rng.dirichlet(np.ones(it.n_options))))
           for c in ("Germany", "Japan", "Brazil") for it in (Q1, Q2)]
    return SurveyDataset("t", "distributional", {"q1": Q1, "q2": Q2}, exs, source="hand")


def test_verbalized_with_stub(tiny_tokenizer, test_ds):
    def reply(prompt, s):
        if "Germany" in prompt:
            return '{"1": 80, "2": 20}' if "prefer" in prompt else "{'1': '50%', '2': '25%', '3': '25%'}"
        return "As an AI I cannot say."

    stub = StubGenerator(reply)
    res = evaluate(stub, tiny_tokenizer, test_ds, EvalConfig(method="persona", readout="verbalized", bootstrap=50), progress=False)
    assert all("JSON object" in p and "Answer with the number" not in p for p in stub.prompts)
    assert verbal_instruction(["1", "2"]) in stub.prompts[0]
    assert stub.calls[0]["do_sample"] is False and stub.calls[0]["n"] == 1
    ro = res["readout"]
    assert ro["name"] == "verbalized" and ro["replies"] == 6 and ro["unparseable"] == 4 and ro["status"] == {"no_json": 4, "ok": 2}
    assert ro["unparsed_examples"][0] == "As an AI I cannot say."
    m = res["metrics"]
    assert m["n"] == 2 and m["coverage"] == pytest.approx(2 / 6) and m["option_mass"] == pytest.approx(2 / 6)
    rows = {(r["group"], r["item_id"]): r for r in res["predictions"]}
    assert rows[("Germany", "q1")]["probs"] == [0.5, 0.25, 0.25] and rows[("Germany", "q2")]["probs"] == [0.8, 0.2]
    assert rows[("Japan", "q1")]["probs"] is None
    assert res["config"]["readout"] == "verbalized"
    assert set(res["cells"]["group"]) == {"Germany"}


def test_sampled_with_stub_makes_a_histogram(tiny_tokenizer, test_ds):
    replies = ["1", "2.", "Answer: 1", "no idea", "1", "3", "1", "Very important"]
    stub = StubGenerator(lambda p, s: replies[s])
    res = evaluate(stub, tiny_tokenizer, test_ds, EvalConfig(method="vanilla", readout="sampled", samples=8, seed=7, bootstrap=0),
                   progress=False)
    assert stub.calls[0] == {"n": 8, "do_sample": True, "temperature": 1.0, "seed": 7, "max_new": 8}
    rows = {(r["group"], r["item_id"]): r for r in res["predictions"]}
    np.testing.assert_allclose(rows[("Japan", "q1")]["probs"], [5 / 7, 1 / 7, 1 / 7], atol=1e-6)
    np.testing.assert_allclose(rows[("Japan", "q2")]["probs"], [4 / 5, 1 / 5], atol=1e-6)  # "3" and the text are not options of q2
    ro = res["readout"]
    assert ro["samples"] == 8 and ro["invalid_samples"] == 1 + 3 and res["timing"]["prompts"] == 2  # vanilla: one prompt per item
    assert res["intervals"] == {}


def test_logprob_is_the_default_and_unchanged(tiny_llama, tiny_tokenizer, test_ds):
    a = evaluate(tiny_llama, tiny_tokenizer, test_ds, EvalConfig(method="persona", bootstrap=100), progress=False)
    b = evaluate(tiny_llama, tiny_tokenizer, test_ds, EvalConfig(method="persona", readout="logprob", bootstrap=100), progress=False)
    assert a["readout"] == {"name": "logprob"} and a["metrics"] == b["metrics"] and a["intervals"] == b["intervals"]
    for m in ("opinionqa_rep", "goqa_sim", "tv", "wvb_w1", "emd", "jsd", "accuracy"):
        iv = a["intervals"]["metrics"][m]
        assert iv["lo"] <= a["metrics"][m] + 1e-12 and a["metrics"][m] <= iv["hi"] + 1e-12, m
    assert a["references"]["uniform"]["intervals"]["metrics"]["tv"]["lo"] is not None


def test_sampled_on_a_tiny_model_is_seeded_and_leaves_the_rng_alone(tiny_llama, tiny_tokenizer, test_ds):
    cfg = EvalConfig(method="persona", readout="sampled", samples=4, seed=3, max_new_tokens=3, batch_size=4, bootstrap=0)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = evaluate(tiny_llama, tiny_tokenizer, test_ds, cfg, progress=False)
    after = torch.rand(1)
    assert torch.equal(before, after)  # sampling ran inside fork_rng
    b = evaluate(tiny_llama, tiny_tokenizer, test_ds, cfg, progress=False)
    assert [r["probs"] for r in a["predictions"]] == [r["probs"] for r in b["predictions"]]
    assert a["readout"]["invalid_samples"] == b["readout"]["invalid_samples"]
    assert a["timing"]["prompts"] == 6 and a["readout"]["samples"] == 4


def test_batched_greedy_generation_equals_one_prompt_at_a_time(tiny_llama, tiny_tokenizer):
    prompts = ["<s>user\nHow important is family in your life?</s>\n<s>assistant\n", "<s>user\nagree?</s>\n<s>assistant\n",
               "System: You are taking part in a survey.\n\nUser: Options: 1. 2. 3.\n\nAssistant:"]
    batched = HFGenerator(tiny_llama, tiny_tokenizer, batch_size=3).generate_texts(prompts, max_new_tokens=5)
    single = HFGenerator(tiny_llama, tiny_tokenizer, batch_size=1).generate_texts(prompts, max_new_tokens=5)
    assert batched == single and all(len(x) == 1 for x in batched)


def test_unknown_readout_is_an_error(tiny_tokenizer, test_ds):
    from pluralign.errors import PluralignError

    with pytest.raises(PluralignError, match="unknown readout"):
        evaluate(StubGenerator(lambda p, s: ""), tiny_tokenizer, test_ds, EvalConfig(readout="telepathy"), progress=False)


@pytest.mark.parametrize("readout", ["verbalized", "sampled"])
def test_generated_readouts_route_each_prompt_on_its_own_profile(tiny_tokenizer, test_ds, readout):
    """With a profile-routed adapter, every generation step of the verbalized and sampled read-outs
    gets the embedding of each row's own profile (prefill and decode alike), so the router sees it."""
    from pluralign.adapters import adapter_config, build_adapted_model
    from tests.adapters.adapter_helpers import PROFILE_DIM, randomize_experts
    from tests.conftest import make_tiny_model

    torch.manual_seed(0)
    model = build_adapted_model(make_tiny_model("llama").float(), "cuma", adapter_config("cuma", profile_dim=PROFILE_DIM)).eval()
    randomize_experts(model)
    emb = {c: torch.full((PROFILE_DIM,), float(i + 1)) for i, c in enumerate(("Germany", "Japan", "Brazil"))}
    from pluralign.adapters import moe_lora

    seen: list[tuple[int, torch.Tensor]] = []

    def hook(mod, args, kwargs):  # every backbone forward (prefill and each decode step)
        ctx = moe_lora._ACTIVE.get()
        assert ctx is not None and ctx.profile is not None, "a generation step ran without the profile"
        ids = kwargs.get("input_ids") if kwargs.get("input_ids") is not None else args[0]
        seen.append((ids.shape[0], ctx.profile.detach().clone()))

    model.model.register_forward_pre_hook(hook, with_kwargs=True)
    kwargs = lambda profiles: {"profile_embeds": torch.stack([emb[p.country] for p in profiles])}  # noqa: E731
    cfg = EvalConfig(method="persona", readout=readout, samples=2, seed=0, max_new_tokens=3, batch_size=4, bootstrap=0)
    evaluate(model, tiny_tokenizer, test_ds, cfg, profile_kwargs=kwargs, progress=False)
    assert len(seen) >= 2 * 3  # several batches x (prefill + decode steps)
    rows = torch.cat([pe for _, pe in seen])
    assert all(pe.shape[0] == n or n % pe.shape[0] == 0 for n, pe in seen)  # one row per sequence (or per prompt of its samples)
    assert {float(v) for v in rows[:, 0]} == {1.0, 2.0, 3.0}  # every country's embedding reached the model
