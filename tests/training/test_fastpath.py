"""The cached-trunk fast path: adapters on the top layers, trained from cached trunk states."""

from __future__ import annotations

import copy

import pytest
import torch

from pluralign.training import TrainConfig
from pluralign.training.data import ConditionalCollator, encode_dataset

from training.test_training import HashEncoder, group_ds

pytestmark = pytest.mark.usefixtures("one_thread")


def _four_layer(seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=600, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=512, bos_token_id=1, eos_token_id=2, pad_token_id=3)
    return LlamaForCausalLM(cfg).eval()


def _adapted(method, top=2, seed=0):
    from pluralign.adapters import adapter_config, build_adapted_model

    base = _four_layer(seed)
    over = {"layers_to_transform": list(range(4 - top, 4)), "dropout": 0.0}
    if method == "cuma":
        over["profile_dim"] = 384
    m = build_adapted_model(base, method, adapter_config(method, **over))
    g = torch.Generator().manual_seed(1)
    for p in m.parameters():
        if p.requires_grad:  # non-zero B so the adapters change the output
            p.data = torch.randn(p.shape, generator=g) * 0.05
    return m


@pytest.mark.parametrize("method", ["lora", "cuma"])
def test_cached_trunk_forward_equals_the_full_forward(method, tiny_tokenizer):
    from pluralign.training.fastpath import attach_trunk
    from pluralign.training.losses import answer_logits

    model = _adapted(method)
    assert model.first_adapted_layer() == 2
    rows = encode_dataset(tiny_tokenizer, group_ds())
    table = {r.profile.key(): e for r, e in zip(rows, HashEncoder().encode([r.profile for r in rows]))} if method == "cuma" else None
    stats = attach_trunk(model, rows, start=2, batch_size=3, progress=False)
    assert stats["unique_rows"] == len(rows) and all(r.trunk is not None for r in rows)
    fast = ConditionalCollator(tiny_tokenizer.pad_token_id, hard_labels=False, profile_table=table, start_layer=2)(rows)
    full = ConditionalCollator(tiny_tokenizer.pad_token_id, hard_labels=False, profile_table=table)(rows)
    assert "inputs_embeds" in fast and "inputs_embeds" not in full
    extra = {"profile_embeds": full["profile_embeds"]} if table else {}
    with torch.no_grad():
        lf, _ = answer_logits(model, fast, extra)
        lr, _ = answer_logits(model, full, extra)
    assert torch.allclose(lf, lr, atol=1e-5), (lf - lr).abs().max()


def test_fast_path_gradients_equal_the_full_path(tiny_tokenizer):
    from pluralign.training.fastpath import attach_trunk
    from pluralign.training.losses import answer_logits, option_logprobs, soft_cross_entropy

    model = _adapted("lora")
    rows = encode_dataset(tiny_tokenizer, group_ds())
    attach_trunk(model, rows, start=2, progress=False)
    grads = []
    for start in (2, None):
        model.zero_grad()
        b = ConditionalCollator(tiny_tokenizer.pad_token_id, hard_labels=False, start_layer=start)(rows)
        lg, _ = answer_logits(model, b)
        soft_cross_entropy(option_logprobs(lg, b["option_ids"], b["option_mask"]), b["target_probs"]).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    for n in grads[0]:
        assert torch.allclose(grads[0][n], grads[1][n], atol=1e-6), n


def test_the_cached_trunk_forward_leaves_the_shared_model_whole(tiny_tokenizer):
    """``start_layer`` runs a view of the backbone: the model's own decoder keeps all its layers
    while a fast forward runs, so a full forward started meanwhile (here from a hook on the top
    layer, as another thread or a nested call would) computes the full model's logits."""
    from pluralign.training.fastpath import attach_trunk
    from pluralign.training.losses import answer_logits

    model = _adapted("cuma")
    parent, attr, layers = model.decoder_layers()
    rows = encode_dataset(tiny_tokenizer, group_ds())
    table = {r.profile.key(): e for r, e in zip(rows, HashEncoder().encode([r.profile for r in rows]))}
    attach_trunk(model, rows, start=2, progress=False)
    fast = ConditionalCollator(tiny_tokenizer.pad_token_id, hard_labels=False, profile_table=table, start_layer=2)(rows)
    full = ConditionalCollator(tiny_tokenizer.pad_token_id, hard_labels=False, profile_table=table)(rows)
    extra = {"profile_embeds": full["profile_embeds"]}
    seen: dict = {}

    def nested_full_forward(module, args):
        if seen:
            return
        seen["layers"] = getattr(parent, attr)
        seen["logits"], _ = answer_logits(model, full, extra)

    with torch.no_grad():
        expected, _ = answer_logits(model, full, extra)
        handle = layers[3].register_forward_pre_hook(nested_full_forward)
        try:
            lf, _ = answer_logits(model, fast, extra)
        finally:
            handle.remove()
    assert seen["layers"] is layers and len(layers) == 4
    assert torch.allclose(seen["logits"], expected, atol=1e-6), (seen["logits"] - expected).abs().max()
    assert torch.allclose(lf, expected, atol=1e-5), (lf - expected).abs().max()
    assert getattr(parent, attr) is layers
    assert [n for n, _ in model.named_parameters()] == [n for n, _ in _adapted("cuma").named_parameters()]


def test_trunk_disk_cache_is_reused(tmp_path, tiny_tokenizer):
    from pluralign.training.fastpath import attach_trunk

    model = _adapted("lora")
    rows = encode_dataset(tiny_tokenizer, group_ds())
    s1 = attach_trunk(model, rows, start=2, progress=False, cache_dir=tmp_path)
    rows2 = encode_dataset(tiny_tokenizer, group_ds())
    s2 = attach_trunk(model, rows2, start=2, progress=False, cache_dir=tmp_path)
    assert s1["computed_rows"] == len(rows) and s2["computed_rows"] == 0 and s2["reused_rows"] == len(rows)
    for a, b in zip(rows, rows2):
        assert torch.equal(a.trunk, b.trunk)
    # another backbone (other weights) never reuses these states
    other = _adapted("lora", seed=5)
    s3 = attach_trunk(other, encode_dataset(tiny_tokenizer, group_ds()), start=2, progress=False, cache_dir=tmp_path)
    assert s3["reused_rows"] == 0


def test_methods_that_train_below_the_layers_have_no_trunk():
    from pluralign.adapters import build_adapted_model
    from pluralign.errors import PluralignError

    m = build_adapted_model(_four_layer(), "full")
    with pytest.raises(PluralignError, match="outside the decoder layers"):
        m.first_adapted_layer()


def test_train_with_top_layers_uses_the_fast_path_and_learns(tmp_path, tiny_tokenizer, tiny_model_dir):
    """End to end through ``train()``: top layers, cached trunk, epochs → steps; loss falls."""
    import json

    from pluralign.data.loaders import register_loader
    from pluralign.training import train

    cfg = TrainConfig(
        method="lora", task="distributional", model=str(tiny_model_dir), data="wvs-shares", split="country",
        test_units=["USA", "CHN"], questions=["Q1", "Q2", "Q3", "Q4"], top_layers=1, epochs=4, batch_size=8, lr=5e-3,
        save_steps=0, logging_steps=1, progress=False, out=str(tmp_path / "run"), trunk_cache_dir="none",
    )
    s = train(cfg)
    assert s["trunk_cache"]["start_layer"] == 1 and s["trunk_cache"]["verify_max_logit_diff"] < 1e-4
    assert s["max_steps"] == -(-4 * s["rows"] // 8)
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    ce = [r["ce"] for r in log if "ce" in r]
    assert ce[-1] < ce[0]
    meta = json.loads((tmp_path / "run" / "adapter" / "pluralign_adapter.json").read_text())
    assert meta["config"]["layers_to_transform"] == [1]
