"""SoftPromptModel: T=0 is the base model, T>0 is concatenated inputs_embeds; files and bad files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pluralign.adapters.softprompt import SoftPromptModel, load_soft_prompt, load_soft_prompt_model, save_soft_prompt
from pluralign.blackbox.population import vsm_prompts
from pluralign.errors import PluralignError
from pluralign.evaluation.scoring import OptionScorer


def _batch():
    ids = torch.tensor([[3, 3, 5, 9, 17, 40], [7, 11, 13, 21, 5, 9]])
    att = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    return ids, att, (att.cumsum(-1) - 1).clamp(min=0)


@torch.no_grad()
def test_zero_tokens_is_the_base_model(tiny_llama):
    ids, att, pos = _batch()
    base = tiny_llama(input_ids=ids, attention_mask=att, position_ids=pos).logits
    sp = SoftPromptModel(tiny_llama)
    assert sp.n_tokens == 0
    assert torch.allclose(sp(input_ids=ids, attention_mask=att, position_ids=pos).logits, base)


@torch.no_grad()
@pytest.mark.parametrize("arch_fixture", ["tiny_llama", "tiny_qwen2"])
def test_prompt_equals_concatenated_embeddings(arch_fixture, request):
    model = request.getfixturevalue(arch_fixture)
    torch.manual_seed(0)
    prompt = torch.randn(4, 64) * 0.1
    sp = SoftPromptModel(model, prompt)
    ids = torch.tensor([[5, 9, 17, 40]])
    manual = torch.cat([prompt[None], model.get_input_embeddings()(ids)], dim=1)
    ref = model(inputs_embeds=manual).logits
    out = sp(input_ids=ids).logits
    assert out.shape == (1, 4, model.config.vocab_size)  # logits of the real tokens only
    assert torch.allclose(out, ref[:, 4:], atol=1e-5)
    # left padding + logits_to_keep: each row equals its unpadded self
    ids2, att, pos = _batch()
    last = sp(input_ids=ids2, attention_mask=att, position_ids=pos, logits_to_keep=1).logits[:, -1]
    alone = sp(input_ids=ids2[:1, 2:]).logits[:, -1]
    assert torch.allclose(last[0], alone[0], atol=1e-5)
    assert not torch.allclose(last[0], SoftPromptModel(model)(input_ids=ids2[:1, 2:]).logits[0, -1], atol=1e-3)


def test_option_scorer_through_soft_prompt_matches_population(tiny_llama, tiny_tokenizer, tiny_evaluator, short_vsm):
    torch.manual_seed(1)
    X = torch.randn(2, 3, 64) * 0.3
    pop = tiny_evaluator.label_logprobs(X)
    prompts, labels = vsm_prompts(tiny_tokenizer, short_vsm)
    sc = OptionScorer(SoftPromptModel(tiny_llama, X[1]), tiny_tokenizer, batch_size=7).next_token(prompts, [labels] * 24)
    lp = torch.tensor(np.array([s.logprobs for s in sc]), dtype=torch.float32)
    assert torch.allclose(lp, pop[1], atol=1e-4)


def test_save_load_roundtrip(tmp_path, tiny_llama):
    p = torch.randn(5, 64)
    save_soft_prompt(tmp_path / "sp", p, {"model": "tiny", "country": "USA", "loss": 1.5})
    t, meta = load_soft_prompt(tmp_path / "sp")
    assert torch.equal(t, p) and meta["tokens"] == 5 and meta["hidden_size"] == 64 and meta["country"] == "USA"
    m = load_soft_prompt_model(tiny_llama, tmp_path / "sp" / "prompt.safetensors")
    assert isinstance(m, SoftPromptModel) and m.n_tokens == 5


def test_bad_prompt_files(tmp_path, tiny_llama):
    save_soft_prompt(tmp_path / "wide", torch.randn(2, 32), {"model": "other"})
    with pytest.raises(PluralignError, match="hidden size 32"):
        load_soft_prompt_model(tiny_llama, tmp_path / "wide")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "prompt.safetensors").write_bytes(b"\x00garbage-not-safetensors")
    with pytest.raises(PluralignError, match="corrupted"):
        load_soft_prompt_model(tiny_llama, bad)
    with pytest.raises(PluralignError, match="not found"):
        load_soft_prompt_model(tiny_llama, tmp_path / "missing")
    save_soft_prompt(tmp_path / "meta", torch.randn(2, 64), {})
    (tmp_path / "meta" / "prompt.json").write_text('{"tokens": 2, "hidden_size": 128}')
    with pytest.raises(PluralignError, match="metadata"):
        load_soft_prompt(tmp_path / "meta")
    with pytest.raises(PluralignError):
        SoftPromptModel(tiny_llama, torch.randn(3, 65))
