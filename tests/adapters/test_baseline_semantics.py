"""Issue 8.6: ``mixlora`` and ``hydralora`` are the papers' methods; the CuMA authors' q/v baselines
keep their behaviour under ``mixlora-qv`` / ``hydralora-qv``.

* MixLoRA (Li et al. 2024, TUDB-Labs/MixLoRA): top-2 LoRA experts on gate/up/down, a linear router
  on the MLP input (post_attention_layernorm output), plain LoRA on q/k/v/o, balance loss 0.01.
* HydraLoRA (Tian et al. 2024, Clin0212/HydraLoRA): per adapted linear one A and N B heads, a dense
  softmax over a linear router on that linear's input, no balance loss.
"""

from __future__ import annotations

import json

import pytest
import torch

from pluralign.adapters import (
    ADAPTER_METHODS,
    MoELoRALinear,
    MoERouter,
    adapter_config,
    build_adapted_model,
    gate_probs,
    get_method,
    load_adapter,
    save_adapter,
)
from pluralign.adapters.config import LEGACY_DEFAULTS
from pluralign.adapters.moe_lora import routers_of
from pluralign.errors import PluralignError
from tests.adapters.adapter_helpers import PROFILE_DIM, batch, randomize_experts
from tests.conftest import make_tiny_model

FFN = {"gate_proj", "up_proj", "down_proj"}
ATTN = {"q_proj", "k_proj", "v_proj", "o_proj"}


def _build(method, arch="llama", **kw):
    kw.setdefault("dropout", 0.0)
    if method == "cuma":
        kw.setdefault("profile_dim", PROFILE_DIM)
    return build_adapted_model(make_tiny_model(arch).float(), method, adapter_config(method, **kw))


def _wrapped(m):
    return {n: mod for n, mod in m.model.named_modules() if isinstance(mod, MoELoRALinear)}


# ----------------------------------------------------------------------------- structure
def test_mixlora_experts_on_ffn_plain_lora_on_attention():
    m = _build("mixlora")
    cfg = m.adapter_config
    assert cfg.top_k == 2 and cfg.balance_coef == 0.01 and cfg.router == "linear" and not cfg.shared_A
    wrapped = _wrapped(m)
    assert {n.split(".")[-1] for n in wrapped} == FFN | ATTN
    for n, lin in wrapped.items():
        leaf = n.split(".")[-1]
        if leaf in FFN:
            assert not lin.dense and lin.n_experts == 8
            assert lin.lora_A.shape == (lin.in_features, 8 * 8) and lin.lora_B.shape == (8 * 8, lin.out_features)
        else:  # one always-on LoRA: no experts, no router of its own
            assert lin.dense and lin.n_experts == 1 and "moe_router" not in lin._modules
            assert lin.lora_A.shape == (lin.in_features, 8) and lin.lora_B.shape == (8, lin.out_features)
    routers = routers_of(m)
    assert sorted(routers) == ["model.layers.0", "model.layers.1"]  # one per decoder layer
    for r in routers.values():
        assert r.w_out is None and r.w_profile is None and r.top_k == 2 and r.input_is_normed


def test_mixlora_routes_from_the_mlp_input():
    """The FFN router reads exactly the post_attention_layernorm output (not the attention input)."""
    m = _build("mixlora").eval()
    randomize_experts(m)
    seen_norm, seen_router = {}, {}
    hooks = []
    for i, layer in enumerate(m.model.model.layers):
        hooks.append(layer.post_attention_layernorm.register_forward_hook(
            lambda mod, a, out, i=i: seen_norm.__setitem__(i, out.detach().clone())))
        hooks.append(layer.input_layernorm.register_forward_hook(
            lambda mod, a, out, i=i: seen_norm.__setitem__(("attn", i), out.detach().clone())))
        r = layer.moe_router
        orig = r.route

        def spy(h, ctx, i=i, orig=orig):
            seen_router[i] = h.detach().clone()
            return orig(h, ctx)

        r.route = spy
    ids, att = batch()
    with torch.no_grad():
        m(input_ids=ids, attention_mask=att)
    for h in hooks:
        h.remove()
    for i in range(2):
        torch.testing.assert_close(seen_router[i], seen_norm[i], rtol=0, atol=0)
        assert (seen_router[i] - seen_norm[("attn", i)]).abs().max() > 1e-3
    # the gates of layer 0 depend on the attention output (its plain LoRA on o_proj), through the residual stream
    with torch.no_grad():
        m(input_ids=ids, attention_mask=att)
        before = gate_probs(m)["model.layers.0"].clone()
        m.model.model.layers[0].self_attn.o_proj.lora_B.add_(1.0)
        m(input_ids=ids, attention_mask=att)
        after = gate_probs(m)["model.layers.0"]
    assert (before - after).abs().max() > 1e-3


def test_mixlora_post_attention_routing_refuses_attention_experts():
    with pytest.raises(PluralignError, match="must be an MLP linear"):
        _build("mixlora", target_modules="q_proj,gate_proj")


def test_hydralora_one_A_per_target_dense_gates_no_balance_loss():
    m = _build("hydralora").train()
    cfg = m.adapter_config
    assert cfg.balance_coef == 0.0 and cfg.shared_A and cfg.router == "linear"
    wrapped = _wrapped(m)
    assert {n.split(".")[-1] for n in wrapped} == FFN  # the targets of the HydraLoRA repository's script
    for n, lin in wrapped.items():
        assert lin.shared_A and lin.lora_A.shape == (lin.in_features, 8)  # one A
        assert lin.lora_B.shape == (8 * 8, lin.out_features)  # N B heads
        router = lin._modules["moe_router"]  # its own router, on its own input
        assert isinstance(router, MoERouter) and router.layer_key == n and router.w_hidden.in_features == lin.in_features
        assert router.w_out is None and router.top_k == 8
    assert not any(hasattr(layer, "moe_router") for layer in m.model.model.layers)  # no per-layer router
    ids, att = batch()
    out = m(input_ids=ids, attention_mask=att, labels=ids)
    assert out.aux_loss.item() == 0.0
    gp = gate_probs(m)
    assert sorted(gp) == sorted(wrapped)
    for g in gp.values():
        assert g.shape == (3, 9, 8) and (g > 0).all()
        torch.testing.assert_close(g.sum(-1), torch.ones(3, 9))
    # the number of heads follows n_experts (top_k 0 = all of them)
    m4 = _build("hydralora", n_experts=4)
    m4(input_ids=ids, attention_mask=att)
    assert all(g.shape[-1] == 4 and (g > 0).all() for g in gate_probs(m4).values())


def test_hydralora_down_proj_router_reads_the_intermediate_activation():
    m = _build("hydralora").eval()
    down = m.model.model.layers[1].mlp.down_proj
    seen = {}
    down.register_forward_pre_hook(lambda mod, a: seen.__setitem__("x", a[0].detach().clone()))
    orig = down.moe_router.route
    down.moe_router.route = lambda h, ctx: (seen.__setitem__("h", h.detach().clone()), orig(h, ctx))[1]
    ids, att = batch()
    with torch.no_grad():
        m(input_ids=ids, attention_mask=att)
    assert seen["h"].shape[-1] == down.in_features == 128
    torch.testing.assert_close(seen["h"], seen["x"], rtol=0, atol=0)


def test_qv_variants_keep_the_cuma_authors_baselines():
    for method, shared in (("mixlora-qv", False), ("hydralora-qv", True)):
        m = _build(method)
        cfg = m.adapter_config
        assert cfg.target_modules == ("q_proj", "v_proj") and cfg.top_k == 2 and cfg.router == "mlp"
        assert cfg.shared_A == shared and cfg.route_from == "input_layernorm" and cfg.dense_modules == ()
        assert {n.split(".")[-1] for n in _wrapped(m)} == {"q_proj", "v_proj"}
        assert "CuMA authors" in get_method(method).summary


def test_method_lists_and_help_say_which_is_which():
    from pluralign.training.config import TrainConfig
    from pluralign.training.methods import METHODS as TRAIN_METHODS
    import dataclasses

    assert tuple(TRAIN_METHODS) == tuple(ADAPTER_METHODS)
    for m in ("mixlora", "hydralora", "mixlora-qv", "hydralora-qv"):
        assert m in ADAPTER_METHODS
    assert "Li et al. 2024" in get_method("mixlora").summary and "Tian et al. 2024" in get_method("hydralora").summary
    help_text = {f.name: f.metadata["help"] for f in dataclasses.fields(TrainConfig)}["method"]
    assert "mixlora-qv" in help_text and "hydralora-qv" in help_text
    # which is which: the --method help points to the command's description, which names the origin of each
    from typer.testing import CliRunner

    from pluralign.cli.main import app

    shown = " ".join(CliRunner().invoke(app, ["train", "--help"], terminal_width=200).output.replace("│", " ").split())
    assert "mixlora-qv and hydralora-qv (the CuMA authors' baseline configurations" in shown
    assert "mixlora (the MixLoRA paper" in shown and "hydralora (the HydraLoRA paper" in shown


def test_dense_modules_listed_as_targets_get_experts():
    m = _build("mixlora-qv", dense_modules="q_proj,k_proj")
    w = _wrapped(m)
    assert not w["model.layers.0.self_attn.q_proj"].dense and w["model.layers.0.self_attn.k_proj"].dense


# ----------------------------------------------------------------------------- maths vs a looped reference
def _reference_gates(router: MoERouter, h: torch.Tensor) -> torch.Tensor:
    """Linear router, per token: softmax over the top-k logits (all of them for dense routing)."""
    B, T, _ = h.shape
    out = torch.zeros(B, T, router.n_experts)
    for b in range(B):
        for t in range(T):
            z = h[b, t] @ router.w_hidden.weight.t() + router.w_hidden.bias
            val, idx = z.sort(descending=True)
            k = router.top_k
            out[b, t, idx[:k]] = torch.exp(val[:k]) / torch.exp(val[:k]).sum()
    return out


def _reference_linear(lin: MoELoRALinear, x: torch.Tensor, gates: torch.Tensor | None) -> torch.Tensor:
    """Per token, per expert: W x + sum_e g_e (alpha / r) B_e A_e x (a plain LoRA for dense linears)."""
    E, r, s = lin.n_experts, lin.r, lin.scaling
    A, B = lin.lora_A, lin.lora_B
    out = lin.base(x).clone()
    for b in range(x.shape[0]):
        for t in range(x.shape[1]):
            for e in range(E):
                g = 1.0 if gates is None else gates[b, t, e]
                if g == 0:
                    continue
                A_e = A if lin.shared_A else A[:, e * r : (e + 1) * r]
                out[b, t] += g * s * ((x[b, t] @ A_e) @ B[e * r : (e + 1) * r])
    return out


@pytest.mark.parametrize("method", ["mixlora", "hydralora", "mixlora-qv"])
def test_batched_forward_equals_looped_per_expert_reference(method):
    kw = {"router": "linear"} if method == "mixlora-qv" else {}
    m = _build(method, n_experts=4, r=3, alpha=6.0, **kw).eval()
    randomize_experts(m, std=0.3)
    with torch.no_grad():  # move the routers off their init too
        for n, p in m.named_parameters():
            if "moe_router" in n:
                p.add_(torch.randn_like(p) * 0.3)
    io, router_in = {}, {}
    for n, lin in _wrapped(m).items():
        lin.register_forward_hook(lambda mod, a, out, n=n: io.__setitem__(n, (a[0].detach().clone(), out.detach().clone())))
    for key, r in routers_of(m).items():
        orig = r.route
        r.route = lambda h, ctx, key=key, orig=orig: (router_in.__setitem__(key, h.detach().clone()), orig(h, ctx))[1]
    ids, att = batch(2, 6)
    with torch.no_grad():
        m(input_ids=ids, attention_mask=att)
    routers = routers_of(m)
    gp = gate_probs(m)
    for key, r in routers.items():
        ref = _reference_gates(r, router_in[key])
        torch.testing.assert_close(gp[key], ref, atol=1e-5, rtol=1e-5)
        assert ((gp[key] > 0).sum(-1) == r.top_k).all()
    for n, lin in _wrapped(m).items():
        x, got = io[n]
        if lin.dense:
            gates = None
        else:
            key = n if n in routers else n.rsplit(".", 2)[0]  # its own router, or its decoder layer's
            gates = gp[key]
        torch.testing.assert_close(got, _reference_linear(lin, x, gates), atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- training paths
@pytest.mark.parametrize("method", ["mixlora", "hydralora"])
def test_gradient_checkpointing_gives_the_same_gradients(method):
    ids, att = batch()
    grads = []
    for ckpt in (False, True):
        m = _build(method, n_experts=4).train()
        randomize_experts(m)
        if ckpt:
            m.gradient_checkpointing_enable()
        out = m(input_ids=ids, attention_mask=att, labels=ids)
        (out.loss + out.aux_loss).backward()
        grads.append({n: p.grad.clone() for n, p in m.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys()
    assert all(g.abs().sum() > 0 for g in grads[0].values())
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("method", ["mixlora", "hydralora"])
def test_generate_equals_step_by_step_forward(method):
    m = _build(method, n_experts=4).eval()
    randomize_experts(m, std=1.0)
    ids, att = batch(2, 6)
    g1 = m.generate(input_ids=ids, attention_mask=att, max_new_tokens=4, do_sample=False, pad_token_id=3)
    seq = ids
    with torch.no_grad():
        for _ in range(4):
            logit = m(input_ids=seq, attention_mask=torch.ones_like(seq)).logits[:, -1]
            seq = torch.cat([seq, logit.argmax(-1, keepdim=True)], 1)
    assert torch.equal(seq, g1)


def test_mixlora_balance_loss_is_on():
    m = _build("mixlora", n_experts=4).train()
    ids, att = batch()
    out = m(input_ids=ids, attention_mask=att, labels=ids)
    assert out.aux_loss.requires_grad and out.aux_loss.item() >= 2 * 0.01 - 1e-6  # two layers, >= 1 each


# ----------------------------------------------------------------------------- saved adapters
@pytest.mark.parametrize("method", ["mixlora", "hydralora", "mixlora-qv", "hydralora-qv"])
def test_save_load_round_trip(method, tmp_path):
    torch.manual_seed(0)
    m = _build(method, n_experts=4)
    with torch.no_grad():
        for p in m.trainable_parameters().values():
            p.add_(torch.randn_like(p) * 0.05)
    m.eval()
    ids, att = batch()
    with torch.no_grad():
        ref = m(input_ids=ids, attention_mask=att).logits
    path = save_adapter(m, tmp_path / "a", base_model="tiny")
    fresh = load_adapter(make_tiny_model("llama").float(), path).eval()
    assert fresh.adapter_config == m.adapter_config
    with torch.no_grad():
        torch.testing.assert_close(fresh(input_ids=ids, attention_mask=att).logits, ref, rtol=0, atol=0)


@pytest.mark.parametrize("old_name,qv", [("mixlora", "mixlora-qv"), ("hydralora", "hydralora-qv")])
def test_adapter_saved_under_the_old_name_loads_as_it_was_trained(old_name, qv, tmp_path):
    """An adapter saved as 'mixlora' / 'hydralora' before the change is a q/v mixture: its config
    has no route_from / dense_modules, and it loads as that, weights and outputs unchanged."""
    torch.manual_seed(0)
    m = _build(qv, n_experts=4)
    randomize_experts(m)
    m.eval()
    ids, att = batch()
    with torch.no_grad():
        ref = m(input_ids=ids, attention_mask=att).logits
    path = save_adapter(m, tmp_path / "a", base_model="tiny")
    meta = json.loads((path / "adapter_config.json").read_text())
    meta["method"] = old_name
    for k in LEGACY_DEFAULTS:
        meta["config"].pop(k)
    (path / "adapter_config.json").write_text(json.dumps(meta))
    old = load_adapter(make_tiny_model("llama").float(), path).eval()
    assert old.method == old_name and old.adapter_config.target_modules == ("q_proj", "v_proj")
    assert old.adapter_config.route_from == "input_layernorm" and old.adapter_config.dense_modules == ()
    with torch.no_grad():
        torch.testing.assert_close(old(input_ids=ids, attention_mask=att).logits, ref, rtol=0, atol=0)


@pytest.mark.parametrize("method", ["mixlora", "hydralora"])
def test_bf16_qwen2_backbone_trains_and_loads_for_eval(method, tmp_path):
    from pluralign.adapters import load_adapter_for_eval

    m = build_adapted_model(make_tiny_model("qwen2").to(torch.bfloat16), method, adapter_config(method, n_experts=4)).train()
    assert {p.dtype for p in m.trainable_parameters().values()} == {torch.float32}
    ids, att = batch()
    out = m(input_ids=ids, attention_mask=att, labels=ids)
    assert out.logits.dtype == torch.bfloat16
    (out.loss + out.aux_loss).backward()
    assert all(p.grad is not None for p in m.trainable_parameters().values())
    path = save_adapter(m, tmp_path / "a", base_model="tiny-qwen2")
    ev, profile_kwargs = load_adapter_for_eval(make_tiny_model("qwen2").to(torch.bfloat16), path)
    assert profile_kwargs is None
    with torch.no_grad():
        assert torch.isfinite(ev(input_ids=ids, attention_mask=att).logits.float()).all()
