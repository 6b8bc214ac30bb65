"""Baselines build and train; save/load round trips; eval loading with a profile encoder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pluralign.adapters import (
    ADAPTER_METHODS,
    adapter_config,
    build_adapted_model,
    load_adapter,
    load_adapter_for_eval,
    read_adapter_config,
    save_adapter,
)
from pluralign.errors import PluralignError
from tests.adapters.adapter_helpers import PROFILE_DIM, batch, randomize_experts
from tests.conftest import make_tiny_model

D = PROFILE_DIM


def _cfg(method, **kw):
    if method == "cuma":
        kw.setdefault("profile_dim", D)
    if method == "ptuning-v2":
        kw.setdefault("num_virtual_tokens", 4)
    return adapter_config(method, **kw)


@pytest.mark.parametrize("method", ADAPTER_METHODS)
def test_each_method_builds_and_trains_one_step(method):
    m = build_adapted_model(make_tiny_model("llama").float(), method, _cfg(method)).train()
    train, total = m.parameter_counts()
    assert 0 < train <= total
    assert (train == total) == (method == "full")
    params = m.trainable_parameters()
    before = {n: p.detach().clone() for n, p in params.items()}
    opt = torch.optim.AdamW(params.values(), lr=1e-2)
    ids, att = batch()
    out = m(input_ids=ids, attention_mask=att, labels=ids, profile_embeds=torch.randn(3, D))
    assert out.aux_loss.dim() == 0
    (out.loss + out.aux_loss).backward()
    opt.step()
    changed = [n for n, p in params.items() if not torch.equal(p.detach(), before[n])]
    assert changed, "no trainable tensor moved"
    frozen = [p for n, p in m.named_parameters() if not p.requires_grad]
    assert all(p.grad is None for p in frozen)


@pytest.mark.parametrize("method", ["cuma", "hydralora", "lora", "ptuning-v2"])
def test_save_load_round_trip_reproduces_logits(method, tmp_path):
    torch.manual_seed(0)
    m = build_adapted_model(make_tiny_model("llama").float(), method, _cfg(method, n_experts=4) if method in ("cuma", "hydralora") else _cfg(method))
    randomize_experts(m)
    with torch.no_grad():  # move every trainable tensor off its init so the round trip is not vacuous
        for p in m.trainable_parameters().values():
            p.add_(torch.randn_like(p) * 0.05)
    m.eval()
    ids, att = batch()
    prof = torch.randn(3, D)
    with torch.no_grad():
        ref = m(input_ids=ids, attention_mask=att, profile_embeds=prof).logits
    path = save_adapter(m, tmp_path / "adapter", base_model="tiny-llama", extra={"step": 7})
    meta = read_adapter_config(path)
    assert meta["method"] == method and meta["base_model"] == "tiny-llama" and meta["extra"] == {"step": 7}
    assert meta["backbone"]["hidden_size"] == 64 and meta["backbone"]["num_hidden_layers"] == 2
    if method == "cuma":
        assert meta["profile_encoder"] == {"name": "minilm-l6", "dim": D}
    fresh = load_adapter(make_tiny_model("llama").float(), path).eval()
    with torch.no_grad():
        got = fresh(input_ids=ids, attention_mask=att, profile_embeds=prof).logits
    torch.testing.assert_close(got, ref, rtol=0, atol=0)


def test_full_fine_tuning_round_trip(tmp_path):
    m = build_adapted_model(make_tiny_model("llama").float(), "full", _cfg("full"))
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    ids, att = batch()
    with torch.no_grad():
        ref = m.eval()(input_ids=ids, attention_mask=att).logits
    save_adapter(m, tmp_path / "a", base_model="tiny")
    got = load_adapter(make_tiny_model("llama").float(), tmp_path / "a").eval()(input_ids=ids, attention_mask=att).logits
    torch.testing.assert_close(got, ref, rtol=0, atol=0)


def test_save_is_atomic_and_replaces_an_earlier_adapter(tmp_path, monkeypatch):
    m = build_adapted_model(make_tiny_model("llama").float(), "mixlora", _cfg("mixlora", n_experts=2))
    p = save_adapter(m, tmp_path / "a", base_model="first")
    import pluralign.adapters.checkpoint as ck

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(ck, "atomic_write_json", boom, raising=False)
    monkeypatch.setattr("pluralign.io.atomic_write_json", boom)
    with pytest.raises(OSError):
        save_adapter(m, p, base_model="second")
    assert read_adapter_config(p)["base_model"] == "first"
    assert [x.name for x in tmp_path.iterdir()] == ["a"]  # no temporary folders left
    monkeypatch.undo()
    save_adapter(m, p, base_model="second")
    assert read_adapter_config(p)["base_model"] == "second"


def test_loading_onto_another_backbone_or_config_fails_clearly(tmp_path):
    m = build_adapted_model(make_tiny_model("llama").float(), "cuma", _cfg("cuma", n_experts=4))
    path = save_adapter(m, tmp_path / "a", base_model="tiny-llama")
    with pytest.raises(PluralignError, match="another backbone.*model_type: adapter llama vs model qwen2"):
        load_adapter(make_tiny_model("qwen2"), path)
    with pytest.raises(PluralignError, match="hidden_size: adapter 64 vs model 32"):
        load_adapter(make_tiny_model("llama", hidden=32), path)
    # a config that no longer matches the weights
    meta = json.loads((path / "adapter_config.json").read_text())
    meta["config"]["n_experts"] = 6
    (path / "adapter_config.json").write_text(json.dumps(meta))
    with pytest.raises(PluralignError, match="shape") as e:
        load_adapter(make_tiny_model("llama"), path)
    assert "\n" not in str(e.value)
    meta["config"]["shared_A"] = True
    meta["config"]["n_experts"] = 4
    meta["config"]["router_input"] = "hidden"
    (path / "adapter_config.json").write_text(json.dumps(meta))
    with pytest.raises(PluralignError, match="do not match the cuma config"):
        load_adapter(make_tiny_model("llama"), path)
    with pytest.raises(PluralignError, match="not an adapter folder"):
        load_adapter(make_tiny_model("llama"), tmp_path)


def test_load_for_eval_scores_with_profiles(tmp_path, tiny_encoder_dir, tiny_tokenizer):
    """The eval path: a profile-routed adapter + its recorded encoder feed the option scorer."""
    from pluralign.data import Profile
    from pluralign.evaluation.scoring import OptionScorer
    from pluralign.models.profile_encoder import ProfileEncoder

    m = build_adapted_model(make_tiny_model("llama").float(), "cuma",
                            _cfg("cuma", n_experts=4, profile_encoder=str(tiny_encoder_dir)))
    randomize_experts(m, std=1.0)
    path = save_adapter(m, tmp_path / "a", base_model="tiny")
    model, profile_kwargs = load_adapter_for_eval(make_tiny_model("llama").float(), path)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    profiles = [Profile(country="Thailand", age=55, sex="female"), Profile(country="Germany"), Profile(country="Mexico", settlement="rural")]
    kw = profile_kwargs(profiles)
    assert kw["profile_embeds"].shape == (3, D)
    enc = ProfileEncoder(str(tiny_encoder_dir))
    torch.testing.assert_close(kw["profile_embeds"], enc.encode(profiles))
    scorer = OptionScorer(model, tiny_tokenizer, batch_size=3)
    prompt = "How important is family in your life? Answer:"
    s = scorer.next_token([prompt] * 3, [["1", "2", "3", "4"]] * 3, batch_extra=lambda idx: profile_kwargs([profiles[i] for i in idx]))
    probs = torch.from_numpy(np.stack([x.probs for x in s]))
    torch.testing.assert_close(probs.sum(-1), torch.ones(3, dtype=probs.dtype))
    assert (probs[0] - probs[1]).abs().max() > 1e-4  # same prompt, other profile, other answer
    # a mixlora adapter needs no profiles
    mx = build_adapted_model(make_tiny_model("llama").float(), "mixlora", _cfg("mixlora", n_experts=2))
    save_adapter(mx, tmp_path / "b", base_model="tiny")
    assert load_adapter_for_eval(make_tiny_model("llama").float(), tmp_path / "b")[1] is None
    # an encoder of the wrong size is refused
    with pytest.raises(PluralignError, match="expects 16"):
        load_adapter_for_eval(make_tiny_model("llama").float(), path, encoder=ProfileEncoder("x", encode_fn=lambda t: torch.zeros(len(t), 8), dim=8))


def test_ptuning_v2_scores_left_padded_batches(tiny_tokenizer):
    """peft prefix tuning with the option scorer (left padding, position ids, logits_to_keep)."""
    from pluralign.evaluation.scoring import OptionScorer

    m = build_adapted_model(make_tiny_model("llama").float(), "ptuning-v2", _cfg("ptuning-v2")).eval()
    prompts = ["Options: 1. 2. 3. Answer:", "How important is family in your life? Very important Rather important. Answer:"]
    labels = [["1", "2", "3"]] * 2
    batched = OptionScorer(m, tiny_tokenizer, batch_size=2).next_token(prompts, labels)
    single = [OptionScorer(m, tiny_tokenizer, batch_size=1).next_token([p], [l])[0] for p, l in zip(prompts, labels)]
    for a, b in zip(batched, single):
        torch.testing.assert_close(torch.tensor(a.probs), torch.tensor(b.probs), atol=1e-5, rtol=1e-4)
