"""One mixture-of-LoRA-experts layer; CuMA, MixLoRA and HydraLoRA are configurations of it.

Layout (per decoder layer that holds target linears):

* one :class:`MoERouter` per decoder layer, run by a forward pre-hook on the layer: it reads the
  layer input once (not once per projection) and, for profile routing, the demographic embedding
  of each sample. ``W [h ; d] = W_h h + W_d d``, so the profile part is one vector per sample,
  broadcast over the tokens (and over decode steps in ``generate``);
* every target linear becomes a :class:`MoELoRALinear`: ``y = W x + sum_e g_e B_e A_e x`` computed as
  one matmul for all A's (one A when ``shared_A``), the sparse gate, one matmul for all B's. No
  Python loop over experts, no host synchronisation.

The gates travel from the router to the projections of the same layer through a
:class:`RoutingContext` that the adapted model's ``forward``/``generate`` sets for the duration of
the call (a :class:`contextvars.ContextVar`, reset in ``finally``). Under gradient checkpointing the
recomputation in the backward pass re-enters the context of its forward call through
``torch.utils.checkpoint``'s ``context_fn`` (see :func:`checkpoint_context_fn`).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from pluralign.adapters.config import MoELoRAConfig
from pluralign.errors import PluralignError


# ----------------------------------------------------------------------------- routing context
@dataclass
class RoutingContext:
    """State of one forward (or generate) call of an adapted model."""

    profile: torch.Tensor | None = None  # [B, D] demographic embeddings, one row per sample
    token_mask: torch.Tensor | None = None  # [B, T] 1 = real token (for the balance loss)
    collect_aux: bool = False  # compute the balance / z losses (training)
    gates: dict = field(default_factory=dict)  # layer key -> scaled gates [B, T or 1, E]
    aux: list = field(default_factory=list)  # per-layer auxiliary losses (already weighted)


_ACTIVE: contextvars.ContextVar[RoutingContext | None] = contextvars.ContextVar("pluralign_routing", default=None)


@contextlib.contextmanager
def routing(ctx: RoutingContext):
    """Make ``ctx`` the active routing context inside the ``with`` block (restored afterwards)."""
    token = _ACTIVE.set(ctx)
    try:
        yield ctx
    finally:
        _ACTIVE.reset(token)


def active_context() -> RoutingContext | None:
    return _ACTIVE.get()


def checkpoint_context_fn():
    """``context_fn`` for ``torch.utils.checkpoint`` (non-reentrant): the recomputation in the
    backward pass runs inside the routing context of the forward call that it replays."""
    ctx = _ACTIVE.get()
    return contextlib.nullcontext(), (routing(ctx) if ctx is not None else contextlib.nullcontext())


# ----------------------------------------------------------------------------- router
class MoERouter(nn.Module):
    """Router of one decoder layer: logits over experts from the (RMS-normalised) layer input and/or
    the sample's demographic embedding; top-k with softmax over the selected logits."""

    def __init__(self, hidden_size: int, cfg: MoELoRAConfig, layer_key: str):
        super().__init__()
        self.layer_key = layer_key
        self.n_experts = cfg.n_experts
        self.top_k = cfg.top_k
        self.scaling = cfg.alpha / cfg.r
        self.balance_coef = cfg.balance_coef
        self.z_loss_coef = cfg.z_loss_coef
        self.uses_hidden = "hidden" in cfg.router_input
        self.uses_profile = "profile" in cfg.router_input
        self.mlp = cfg.router == "mlp"
        width = cfg.router_hidden if self.mlp else cfg.n_experts
        self.w_hidden = nn.Linear(hidden_size, width, bias=True) if self.uses_hidden else None
        self.w_profile = nn.Linear(cfg.profile_dim, width, bias=not self.uses_hidden) if self.uses_profile else None
        self.w_out = nn.Linear(width, cfg.n_experts, bias=True) if self.mlp else None
        self.last_gates: torch.Tensor | None = None  # detached gates of the last call (analysis)
        self.record = True

    def logits(self, h: torch.Tensor | None, profile: torch.Tensor | None) -> torch.Tensor:
        """``[B, T, E]`` (or ``[B, 1, E]`` for profile-only routing)."""
        z = None
        if self.uses_hidden:
            w = self.w_hidden
            hn = F.rms_norm(h, (h.shape[-1],), eps=1e-6)
            z = F.linear(hn, w.weight.to(h.dtype), w.bias.to(h.dtype))
        if self.uses_profile:
            w = self.w_profile
            dt = h.dtype if h is not None else w.weight.dtype
            zp = F.linear(profile.to(dt), w.weight.to(dt), None if w.bias is None else w.bias.to(dt))[:, None, :]
            z = zp if z is None else z + zp  # one vector per sample, broadcast over tokens
        if self.mlp:
            w = self.w_out
            z = F.linear(F.gelu(z), w.weight.to(z.dtype), w.bias.to(z.dtype))
        return z

    def gate(self, logits: torch.Tensor):
        """Dense gate matrix with exactly ``top_k`` non-zeros per row, rows summing to 1.

        Returns ``(gates, probs, top_idx)``; probs is the full softmax (for the balance loss)."""
        logits = logits.float()
        if self.top_k >= self.n_experts:
            probs = logits.softmax(-1)
            return probs, probs, None
        top_val, top_idx = logits.topk(self.top_k, dim=-1)
        gates = torch.zeros_like(logits).scatter(-1, top_idx, top_val.softmax(-1))
        return gates, None, top_idx

    def aux_loss(self, logits, gates, probs, top_idx, token_mask) -> torch.Tensor:
        logits = logits.float()
        if probs is None:
            probs = logits.softmax(-1)
        E = self.n_experts
        if token_mask is None or logits.shape[1] == 1:
            m = logits.new_ones(logits.shape[:2])
        else:
            m = token_mask[:, -logits.shape[1]:].to(logits.dtype)
        denom = m.sum().clamp(min=1.0)
        m3 = m.unsqueeze(-1)
        P = (probs * m3).sum((0, 1)) / denom  # mean router probability per expert
        if top_idx is None:  # soft routing: every expert is dispatched; use P itself (min at uniform)
            f = P
        else:  # fraction of the top-k dispatch slots that go to each expert
            hits = torch.zeros_like(logits).scatter(-1, top_idx, 1.0)
            f = (hits * m3).sum((0, 1)) / (denom * self.top_k)
        loss = logits.new_zeros(())
        if self.balance_coef:
            loss = loss + self.balance_coef * E * (f * P).sum()
        if self.z_loss_coef:
            z = torch.logsumexp(logits, dim=-1) ** 2
            loss = loss + self.z_loss_coef * (z * m).sum() / denom
        return loss

    def route(self, h: torch.Tensor, ctx: RoutingContext) -> torch.Tensor:
        profile = None
        if self.uses_profile:
            profile = ctx.profile
            if profile is None:
                raise PluralignError(
                    "this adapter routes on the demographic profile: pass profile_embeds (one row per sample)",
                    field="profile_embeds",
                )
            if profile.shape[0] != h.shape[0]:
                if profile.shape[0] and h.shape[0] % profile.shape[0] == 0:  # beams / num_return_sequences
                    profile = profile.repeat_interleave(h.shape[0] // profile.shape[0], dim=0)
                else:
                    raise PluralignError(
                        f"profile_embeds has {profile.shape[0]} rows for a batch of {h.shape[0]}", field="profile_embeds"
                    )
        logits = self.logits(h if self.uses_hidden else None, profile)
        gates, probs, top_idx = self.gate(logits)
        if ctx.collect_aux and (self.balance_coef or self.z_loss_coef):
            ctx.aux.append(self.aux_loss(logits, gates, probs, top_idx, ctx.token_mask))
        if self.record:
            self.last_gates = gates.detach()
        return (gates * self.scaling).to(h.dtype)


def _router_pre_hook(router: MoERouter):
    def hook(module, args, kwargs):
        ctx = _ACTIVE.get()
        if ctx is None:
            raise PluralignError(
                "a model with MoE-LoRA adapters must be called through its adapted wrapper (forward or generate), "
                "not through the inner backbone", field="model"
            )
        h = args[0] if args else kwargs.get("hidden_states")
        ctx.gates[router.layer_key] = router.route(h, ctx)
        return None

    return hook


# ----------------------------------------------------------------------------- expert layer
class MoELoRALinear(nn.Module):
    """``base(x) + sum_e g_e(x, d) * B_e A_e dropout(x)`` with the gates of its decoder layer."""

    def __init__(self, base: nn.Linear, cfg: MoELoRAConfig, layer_key: str, name: str = ""):
        super().__init__()
        d_in, d_out = base.in_features, base.out_features
        if cfg.r > min(d_in, d_out):
            raise PluralignError(
                f"rank r={cfg.r} is larger than layer {name or layer_key} ({d_in} -> {d_out})", field="r"
            )
        self.base = base
        self.layer_key = layer_key
        self.n_experts, self.r, self.shared_A = cfg.n_experts, cfg.r, cfg.shared_A
        w = base.weight
        dtype = torch.float32 if w.dtype in (torch.float16, torch.bfloat16) else w.dtype
        n_a = cfg.r if cfg.shared_A else cfg.n_experts * cfg.r
        bound = 1.0 / math.sqrt(d_in)  # = nn.Linear / peft kaiming_uniform(a=sqrt(5)) bound
        self.lora_A = nn.Parameter(torch.empty(d_in, n_a, device=w.device, dtype=dtype).uniform_(-bound, bound))
        self.lora_B = nn.Parameter(torch.zeros(cfg.n_experts * cfg.r, d_out, device=w.device, dtype=dtype))
        self.dropout = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    @property
    def weight(self):  # some model code reads .weight of projections (dtype / device checks)
        return self.base.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        ctx = _ACTIVE.get()
        g = None if ctx is None else ctx.gates.get(self.layer_key)
        if g is None:
            raise PluralignError(
                f"no routing for {self.layer_key}: call the model through its adapted wrapper; with gradient "
                "checkpointing use the wrapper's gradient_checkpointing_enable()", field="model"
            )
        xa = self.dropout(x) @ self.lora_A.to(x.dtype)  # all A's in one matmul: [..., E*r] (or [..., r])
        if self.shared_A:
            mixed = g.unsqueeze(-1) * xa.unsqueeze(-2)  # [..., E, r]
        else:
            mixed = g.unsqueeze(-1) * xa.unflatten(-1, (self.n_experts, self.r))
        return out + mixed.flatten(-2) @ self.lora_B.to(x.dtype)  # all B's in one matmul

    def extra_repr(self) -> str:
        return f"experts={self.n_experts}, r={self.r}, shared_A={self.shared_A}"


# ----------------------------------------------------------------------------- installation
def _decoder_layer_of(model: nn.Module, name: str) -> str | None:
    """Name of the innermost ModuleList element that contains module ``name``."""
    parts = name.split(".")
    for i in range(len(parts) - 1, 0, -1):
        if parts[i].isdigit():
            parent = model.get_submodule(".".join(parts[:i])) if i else model
            if isinstance(parent, nn.ModuleList):
                return ".".join(parts[: i + 1])
    return None


def linear_module_names(model: nn.Module) -> list[str]:
    """Distinct last path components of the linear layers of ``model`` (for error messages)."""
    names = []
    for n, m in model.named_modules():
        if isinstance(m, nn.Linear):
            leaf = n.split(".")[-1]
            if leaf not in names:
                names.append(leaf)
    return names


def install_moe_lora(model: nn.Module, cfg: MoELoRAConfig) -> list[str]:
    """Freeze ``model`` and wrap its target linears with experts; one router per decoder layer.
    Returns the wrapped module names."""
    hidden = getattr(getattr(model, "config", None), "hidden_size", None)
    targets = [
        (n, m) for n, m in model.named_modules()
        if isinstance(m, nn.Linear) and n.split(".")[-1] in cfg.target_modules
    ]
    found = {n.split(".")[-1] for n, _ in targets}
    missing = [t for t in cfg.target_modules if t not in found]
    if missing:
        raise PluralignError(
            f"target module(s) {', '.join(missing)} not found in {type(model).__name__} "
            f"(linear modules: {', '.join(linear_module_names(model))})",
            field="target_modules",
        )
    for p in model.parameters():
        p.requires_grad_(False)
    routers: dict[str, MoERouter] = {}
    wrapped = []
    for name, lin in targets:
        layer_key = _decoder_layer_of(model, name)
        if layer_key is None:
            raise PluralignError(f"module {name} is not inside a decoder layer (nn.ModuleList)", field="target_modules")
        layer = model.get_submodule(layer_key)
        if layer_key not in routers:
            h = hidden or lin.in_features
            router = MoERouter(h, cfg, layer_key).to(device=lin.weight.device)
            layer.add_module("moe_router", router)
            layer.register_forward_pre_hook(_router_pre_hook(router), with_kwargs=True)
            routers[layer_key] = router
        parent_name, _, leaf = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, leaf, MoELoRALinear(lin, cfg, layer_key, name))
        wrapped.append(name)
    return wrapped


def routers_of(model: nn.Module) -> dict[str, MoERouter]:
    return {m.layer_key: m for m in model.modules() if isinstance(m, MoERouter)}
