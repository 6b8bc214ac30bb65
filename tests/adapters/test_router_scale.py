"""Issue 8.3: at initialisation the profile moves CuMA's router as much as the token does.

MiniLM embeddings have unit norm (per-unit scale 1/sqrt(384)) while the router's token state is
RMS-normalised (per-unit scale ~1); without normalising the profile, ``W_d d`` is ~20x smaller than
``W_h h`` and CuMA starts as a token-only router."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from pluralign.adapters import (
    MoERouter,
    adapter_config,
    build_adapted_model,
    config_help,
    gate_probs,
    load_adapter,
    save_adapter,
)
from pluralign.adapters.config import LEGACY_DEFAULTS
from pluralign.adapters.moe_lora import routers_of
from pluralign.errors import PluralignError
from tests.adapters.adapter_helpers import randomize_experts
from tests.conftest import make_tiny_model

D = 384  # all-MiniLM-L6-v2


def _unit(n, seed):
    return F.normalize(torch.randn(n, D, generator=torch.Generator().manual_seed(seed)), dim=-1)


def _swap_ratio(**kw) -> list[float]:
    """Per layer: mean |Δ gate| when the profile is swapped / mean |Δ gate| when the tokens are (soft routing)."""
    m = build_adapted_model(
        make_tiny_model("llama").float(), "cuma",
        adapter_config("cuma", profile_dim=D, n_experts=8, top_k=8, dropout=0.0, **kw),
    ).eval()
    g = torch.Generator().manual_seed(0)
    ids1, ids2 = torch.randint(5, 590, (16, 12), generator=g), torch.randint(5, 590, (16, 12), generator=g)
    p1, p2 = _unit(16, 1), _unit(16, 2)

    def gates(ids, p):
        with torch.no_grad():
            m(input_ids=ids, attention_mask=torch.ones_like(ids), profile_embeds=p)
        return gate_probs(m)

    a, b, c = gates(ids1, p1), gates(ids1, p2), gates(ids2, p1)
    return [((a[k] - b[k]).abs().mean() / (a[k] - c[k]).abs().mean()).item() for k in a]


@pytest.mark.parametrize("router", ["mlp", "linear"])
def test_profile_moves_the_gates_as_much_as_the_token_at_init(router):
    for ratio in _swap_ratio(router=router):
        assert 0.3 < ratio < 3.0, ratio


def test_profile_norm_none_is_the_old_token_dominated_router():
    for ratio in _swap_ratio(profile_norm="none"):
        assert ratio < 0.15, ratio


def test_profile_part_is_rms_normalised_and_scale_free():
    r = MoERouter(64, adapter_config("cuma", profile_dim=D, router="linear", n_experts=4), "L")
    d = _unit(5, 3)
    want = F.linear(d * D**0.5, r.w_profile.weight, r.w_hidden.bias).unsqueeze(1)
    torch.testing.assert_close(r.profile_part(d, torch.float32), want)
    torch.testing.assert_close(r.profile_part(7.0 * d, torch.float32), want)  # only the direction counts
    old = MoERouter(64, adapter_config("cuma", profile_dim=D, router="linear", n_experts=4, profile_norm="none"), "L")
    torch.testing.assert_close(old.profile_part(d, torch.float32), F.linear(d, old.w_profile.weight, old.w_hidden.bias).unsqueeze(1))


@pytest.mark.parametrize("hidden", [64, 576, 2048])
def test_initial_token_and_profile_terms_have_equal_variance(hidden):
    torch.manual_seed(0)
    cfg = adapter_config("cuma", profile_dim=D, router="linear", n_experts=64)
    r = MoERouter(hidden, cfg, "L")
    h = F.rms_norm(torch.randn(4000, hidden), (hidden,))
    d = F.rms_norm(_unit(4000, 4), (D,))
    s_h = (h @ r.w_hidden.weight.t()).std().item()
    s_d = (d @ r.w_profile.weight.t()).std().item()
    assert 0.8 < s_d / s_h < 1.25, (s_h, s_d)
    # together: the scale of a router on the token state alone (nn.Linear init, RMS-normalised input)
    hid = MoERouter(hidden, adapter_config("cuma", router="linear", n_experts=64, router_input="hidden"), "L")
    s_only = (h @ hid.w_hidden.weight.t()).std().item()
    assert 0.85 < (s_h**2 + s_d**2) ** 0.5 / s_only < 1.15


def test_option_is_documented_and_validated():
    text = config_help("cuma")["profile_norm"]
    assert "rms" in text and "none" in text and "sqrt(D)" in text
    assert adapter_config("cuma").profile_norm == "rms"
    with pytest.raises(PluralignError, match="profile_norm must be one of rms, none"):
        adapter_config("cuma", profile_norm="l2")


def test_adapter_saved_before_the_option_loads_with_the_old_behaviour(tmp_path):
    """A config without profile_norm (and the other fields added since) reads as the old router."""
    torch.manual_seed(0)
    old = build_adapted_model(make_tiny_model("llama").float(), "cuma",
                              adapter_config("cuma", profile_dim=D, n_experts=4, dropout=0.0, profile_norm="none"))
    randomize_experts(old, std=1.0)
    old.eval()
    ids = torch.randint(5, 590, (3, 9), generator=torch.Generator().manual_seed(5))
    prof = _unit(3, 6)
    with torch.no_grad():
        ref = old(input_ids=ids, profile_embeds=prof).logits
    path = save_adapter(old, tmp_path / "a", base_model="tiny")
    meta = json.loads((path / "adapter_config.json").read_text())
    for k in LEGACY_DEFAULTS:
        meta["config"].pop(k)
    (path / "adapter_config.json").write_text(json.dumps(meta))
    got = load_adapter(make_tiny_model("llama").float(), path).eval()
    assert got.adapter_config.profile_norm == "none"
    assert all(r.profile_norm == "none" for r in routers_of(got).values())
    with torch.no_grad():
        torch.testing.assert_close(got(input_ids=ids, profile_embeds=prof).logits, ref, rtol=0, atol=0)


def test_new_adapter_round_trips_with_rms_profile_norm(tmp_path):
    m = build_adapted_model(make_tiny_model("llama").float(), "cuma", adapter_config("cuma", profile_dim=D, n_experts=4))
    randomize_experts(m, std=1.0)
    m.eval()
    ids = torch.randint(5, 590, (3, 9), generator=torch.Generator().manual_seed(5))
    prof = _unit(3, 6)
    with torch.no_grad():
        ref = m(input_ids=ids, profile_embeds=prof).logits
    path = save_adapter(m, tmp_path / "a", base_model="tiny")
    assert json.loads((path / "adapter_config.json").read_text())["config"]["profile_norm"] == "rms"
    got = load_adapter(make_tiny_model("llama").float(), path).eval()
    assert got.adapter_config.profile_norm == "rms"
    with torch.no_grad():
        torch.testing.assert_close(got(input_ids=ids, profile_embeds=prof).logits, ref, rtol=0, atol=0)
