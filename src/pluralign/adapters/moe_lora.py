"""One mixture-of-LoRA-experts layer; CuMA, MixLoRA and HydraLoRA are configurations of it.

Layout (per decoder layer that holds target linears):

* one :class:`MoERouter` per decoder layer, run by a hook: it reads the token state once (not once
  per projection) and, for profile routing, the demographic embedding of each sample.
  ``route_from``: ``input_layernorm`` (the attention input, CuMA) or ``post_attention_layernorm``
  (the MLP input, MixLoRA); or ``module``: one router per target linear, on its own input
  (HydraLoRA). ``W [h ; d] = W_h h + W_d d``, so the profile part is one vector per sample,
  broadcast over the tokens (and over decode steps in ``generate``);
* the two router inputs have the same scale: ``h`` is RMS-normalised (per-unit scale ~1) and, with
  ``profile_norm="rms"``, so is ``d`` (``d * sqrt(D) / ||d||``; a unit-norm MiniLM embedding has
  per-unit scale 1/sqrt(384)); ``W_h`` and ``W_d`` are initialised like ``nn.Linear`` on their own
  input times 1/sqrt(2), so ``W_h h`` and ``W_d d`` have equal variance at step 0 and their sum that
  of a token-only router. Without it (``profile_norm="none"``, adapters saved before the option)
  ``W_d d`` is ~20x smaller than ``W_h h`` at initialisation and the router starts token-only;
* every target linear becomes a :class:`MoELoRALinear`: ``y = W x + sum_e g_e B_e A_e x`` computed as
  one matmul for all A's (one A when ``shared_A``), the sparse gate, one matmul for all B's. No
  Python loop over experts, no host synchronisation. The linears of ``dense_modules`` get the same
  module with one always-on expert and no router: a plain LoRA ``W x + (alpha / r) B A x``.

Mixing is per linear with the gates of the layer: MixLoRA's experts on gate/up/down give
``W_d' act(W_g' x) * (W_u' x)`` with each ``W' = W + sum_e g_e B_e A_e``, not MixLoRA's mixture of
whole expert FFNs ``sum_e g_e FFN_e(x)`` (the two differ through the activation once B != 0).

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
    collect_aux: bool = False  # keep router logits for the balance / z losses (training)
    gates: dict = field(default_factory=dict)  # layer key -> gates [B, T or 1, E] (rows sum to 1)
    profile_parts: dict = field(default_factory=dict)  # layer key -> W_d d [B, 1, H_r], once per call
    router_logits: list = field(default_factory=list)  # (logits, top_idx) per layer when collect_aux
    bypass: bool = False  # adapters off: every MoELoRALinear returns its base output, routers do nothing


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


# ----------------------------------------------------------------------------- losses
def router_aux_loss(
    logits: torch.Tensor,
    top_idx: torch.Tensor | None,
    token_mask: torch.Tensor | None,
    *,
    top_k: int,
    balance_coef: float,
    z_loss_coef: float,
) -> torch.Tensor:
    """Weighted load-balancing (+ z) loss, summed over the leading (layer) dimensions.

    ``logits`` ``[..., B, T, E]``; ``top_idx`` ``[..., B, T, k]`` (None for soft routing);
    ``token_mask`` ``[B, T]`` (1 = real token) or None. Balance (Switch / Mixtral):
    ``E * sum_i f_i P_i`` with ``P_i`` the mean router probability of expert i and ``f_i`` the
    fraction of the top-k dispatch slots that go to expert i; 1 when routing is uniform. With
    soft routing every expert is dispatched, so ``f = P`` (``E * sum P_i^2``, also 1 at uniform).
    z-loss (ST-MoE): ``mean(logsumexp(logits)^2)``."""
    logits = logits.float()
    E = logits.shape[-1]
    T = logits.shape[-2]
    if token_mask is None or T == 1:
        m = logits.new_ones(logits.shape[-3:-1])
    else:
        m = token_mask[:, -T:].to(logits.dtype)
    denom = m.sum().clamp(min=1.0)
    m3 = m.unsqueeze(-1)
    loss = logits.new_zeros(())
    if balance_coef:
        probs = logits.softmax(-1)
        P = (probs * m3).sum((-3, -2)) / denom  # [..., E]
        if top_idx is None:
            f = P
        else:
            hits = torch.zeros_like(logits).scatter_(-1, top_idx, 1.0)
            f = (hits * m3).sum((-3, -2)) / (denom * top_k)
        loss = loss + balance_coef * E * (f * P).sum()
    if z_loss_coef:
        z = torch.logsumexp(logits, dim=-1) ** 2
        loss = loss + z_loss_coef * (z * m).sum() / (denom * (z.numel() // m.numel()))
    return loss


# ----------------------------------------------------------------------------- router
def _w(t: torch.Tensor | None, dtype: torch.dtype):
    return None if t is None else (t if t.dtype == dtype else t.to(dtype))


class MoERouter(nn.Module):
    """Router of one decoder layer: logits over experts from the (RMS-normalised) layer input and/or
    the sample's demographic embedding; top-k with softmax over the selected logits only."""

    def __init__(self, hidden_size: int, cfg: MoELoRAConfig, layer_key: str):
        super().__init__()
        self.layer_key = layer_key
        self.n_experts = cfg.n_experts
        self.top_k = cfg.top_k or cfg.n_experts  # 0: every expert (soft routing)
        self.balance_coef = cfg.balance_coef
        self.z_loss_coef = cfg.z_loss_coef
        self.uses_hidden = "hidden" in cfg.router_input
        self.uses_profile = "profile" in cfg.router_input
        self.mlp = cfg.router == "mlp"
        width = cfg.router_hidden if self.mlp else cfg.n_experts
        self.w_hidden = nn.Linear(hidden_size, width, bias=True) if self.uses_hidden else None
        self.w_profile = nn.Linear(cfg.profile_dim, width, bias=not self.uses_hidden) if self.uses_profile else None
        self.w_out = nn.Linear(width, cfg.n_experts, bias=True) if self.mlp else None
        self.profile_norm = getattr(cfg, "profile_norm", "none") if self.uses_profile else "none"
        if self.uses_hidden and self.uses_profile and self.profile_norm == "rms":
            with torch.no_grad():  # W_h h and W_d d: equal variance, their sum that of W_h h alone
                self.w_hidden.weight.mul_(math.sqrt(0.5))
                self.w_profile.weight.mul_(math.sqrt(0.5))
        self.r = cfg.r
        self.scaling = cfg.alpha / cfg.r
        self.input_is_normed = False  # True when it reads the output of the layer's input norm
        self._last: tuple | None = None  # (detached expanded gates, routed positions) of the last call
        self.record = True

    @property
    def last_gates(self) -> torch.Tensor | None:
        """Gates of the last call, ``[B, T, E]`` (``[B, 1, E]`` for profile-only routing)."""
        if self._last is None:
            return None
        g, t, scale = self._last
        g = g[:, :t, :, 0]
        return g if scale == 1.0 else g / scale

    def profile_part(self, profile: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """``W_d d + b``: ``[B, 1, width]``, one vector per sample (it carries the router's first
        bias, so the per-token part is a plain matmul). With ``profile_norm="rms"`` ``d`` is first
        RMS-normalised (``d * sqrt(D) / ||d||``, in fp32), the scale of the normalised token state."""
        if self.profile_norm == "rms":
            profile = F.rms_norm(profile.float(), (profile.shape[-1],), eps=1e-12)
        bias = self.w_hidden.bias if self.uses_hidden else self.w_profile.bias
        return F.linear(profile.to(dtype), _w(self.w_profile.weight, dtype), _w(bias, dtype)).unsqueeze(1)

    def logits(self, h: torch.Tensor | None, profile_part: torch.Tensor | None) -> torch.Tensor:
        """``[B, T, E]`` (``[B, 1, E]`` for profile-only routing), in the activation dtype.
        ``W [h ; d] + b = W_h h + (W_d d + b)``: the profile term is added per sample. Computed on
        flattened tokens with fused matmul + bias kernels (few operators: decoding is launch-bound)."""
        if not self.uses_hidden:
            z = profile_part
            if self.mlp:
                w = self.w_out
                z = F.linear(F.gelu(z), _w(w.weight, z.dtype), _w(w.bias, z.dtype))
            return z
        B, T, H = h.shape
        dt = h.dtype
        hn = h if self.input_is_normed else F.rms_norm(h, (H,), eps=1e-6)
        hn = hn.reshape(B * T, H)
        w = self.w_hidden
        if profile_part is None:
            z = torch.addmm(_w(w.bias, dt), hn, _w(w.weight, dt).t())
        elif T == 1:  # one token per sample (decoding): matmul and per-sample bias in one kernel
            z = torch.addmm(profile_part.reshape(B, -1), hn, _w(w.weight, dt).t())
        else:
            z = ((hn @ _w(w.weight, dt).t()).view(B, T, -1) + profile_part).view(B * T, -1)
        if self.mlp:
            w = self.w_out
            z = torch.addmm(_w(w.bias, dt), F.gelu(z), _w(w.weight, dt).t())
        return z.view(B, T, -1)

    def gate_expanded(self, logits: torch.Tensor, r: int, tokens: int | None = None, scale: float = 1.0):
        """Gates written straight into their expanded form ``[B, T, E, r]`` (one weight per expert
        rank column, what the experts multiply), times ``scale``: ``(expanded, top_idx)``. Top-k:
        softmax over the selected logits only, exactly ``top_k`` non-zero experts per token."""
        *lead, E = logits.shape
        if self.top_k >= E:
            w = logits.softmax(-1)
            g = (w if scale == 1.0 else w * scale).unsqueeze(-1).expand(*lead, E, r)
            idx = None
        else:
            val, idx = logits.topk(self.top_k, dim=-1)
            k = self.top_k
            w = val.softmax(-1)
            w = w if scale == 1.0 else w * scale
            g = logits.new_zeros(*lead, E, r).scatter(
                -2, idx.unsqueeze(-1).expand(*lead, k, r), w.unsqueeze(-1).expand(*lead, k, r)
            )
        if tokens is not None and tokens != lead[-1]:  # profile-only routing: the same gates for every token
            g = g.expand(*lead[:-1], tokens, E, r)
        return g, idx

    def gate(self, logits: torch.Tensor):
        """``(gates [B, T, E], top_idx)``: rows summing to 1 with exactly ``top_k`` non-zeros
        (softmax over the selected logits); ``top_idx`` is None for soft routing."""
        g, idx = self.gate_expanded(logits, 1)
        return g[..., 0], idx

    def aux_loss(self, logits, top_idx, token_mask=None) -> torch.Tensor:
        return router_aux_loss(
            logits, top_idx, token_mask, top_k=self.top_k, balance_coef=self.balance_coef, z_loss_coef=self.z_loss_coef
        )

    def route(self, h: torch.Tensor, ctx: RoutingContext) -> tuple[torch.Tensor, float]:
        """Gates of this layer for the tokens of ``h`` ``[B, T, H]``, expanded to one weight per
        expert rank column: ``([B*T, E*r] in h's dtype, alpha)``; the experts' output is scaled by
        ``alpha``. With autograd on, the alpha / r scaling is folded into the gates (one small
        multiply instead of scaling two gradients per projection); without, into the B matmul."""
        part = None
        if self.uses_profile:
            part = ctx.profile_parts.get(self.layer_key)
            if part is None or part.shape[0] != h.shape[0]:
                part = self.profile_part(self._profile_rows(ctx, h.shape[0]), h.dtype)
                ctx.profile_parts[self.layer_key] = part  # reused by every decode step of generate()
        logits = self.logits(h if self.uses_hidden else None, part)
        B, T = h.shape[0], h.shape[1]
        fold = torch.is_grad_enabled()
        scale = self.scaling if fold else 1.0
        g, top_idx = self.gate_expanded(logits, self.r, T, scale)
        if ctx.collect_aux and (self.balance_coef or self.z_loss_coef):
            ctx.router_logits.append((self, logits, top_idx))
        if self.record:
            self._last = (g.detach() if g.requires_grad else g, logits.shape[1], scale)
        return g.reshape(B * T, self.n_experts * self.r), (1.0 if fold else self.scaling)

    @staticmethod
    def _profile_rows(ctx: RoutingContext, batch: int) -> torch.Tensor:
        profile = ctx.profile
        if profile is None:
            raise PluralignError(
                "this adapter routes on the demographic profile: pass profile_embeds (one row per sample)",
                field="profile_embeds",
            )
        if profile.shape[0] != batch:
            if profile.shape[0] and batch % profile.shape[0] == 0:  # beams / num_return_sequences
                return profile.repeat_interleave(batch // profile.shape[0], dim=0)
            raise PluralignError(f"profile_embeds has {profile.shape[0]} rows for a batch of {batch}", field="profile_embeds")
        return profile


def collect_aux_loss(ctx: RoutingContext, device) -> torch.Tensor:
    """Sum of the routers' weighted auxiliary losses of one call, computed for all layers at once
    (one stacked computation instead of a dozen small ops per layer)."""
    if not ctx.router_logits:
        return torch.zeros((), device=device)
    groups: dict[tuple, list] = {}
    for router, logits, idx in ctx.router_logits:
        key = (router.top_k, router.balance_coef, router.z_loss_coef, tuple(logits.shape), idx is None)
        groups.setdefault(key, []).append((logits, idx))
    total = None
    for (k, bc, zc, _, soft), items in groups.items():
        logits = torch.stack([l for l, _ in items])
        idx = None if soft else torch.stack([i for _, i in items])
        loss = router_aux_loss(logits, idx, ctx.token_mask, top_k=k, balance_coef=bc, z_loss_coef=zc)
        total = loss if total is None else total + loss
    return total


def _active_or_raise() -> RoutingContext:
    ctx = _ACTIVE.get()
    if ctx is None:
        raise PluralignError(
            "a model with MoE-LoRA adapters must be called through its adapted wrapper (forward or generate), "
            "not through the inner backbone", field="model"
        )
    return ctx


def _router_pre_hook(router: MoERouter):
    """Route from the decoder layer's input (RMS-normalised by the router)."""

    def hook(module, args, kwargs):
        h = args[0] if args else kwargs.get("hidden_states")
        ctx = _active_or_raise()
        if ctx.bypass:
            return None
        ctx.gates[router.layer_key] = router.route(h, ctx)
        return None

    return hook


def _router_norm_hook(router: MoERouter):
    """Route from the output of the layer's input norm: the very tensor q/k/v read, no extra norm."""

    def hook(module, args, output):
        ctx = _active_or_raise()
        if ctx.bypass:
            return None
        ctx.gates[router.layer_key] = router.route(output, ctx)
        return None

    return hook


# ----------------------------------------------------------------------------- expert layer
class MoELoRALinear(nn.Module):
    """``base(x) + (alpha / r) * sum_e g_e(x, d) * B_e A_e dropout(x)`` with the gates of its decoder
    layer, or of its own router (``moe_router``, ``route_from="module"``). ``dense=True``: one
    always-on expert without a router (gate 1), i.e. a plain LoRA of rank ``dense_r``."""

    def __init__(self, base: nn.Linear, cfg: MoELoRAConfig, layer_key: str, name: str = "", *,
                 dense: bool = False, router: "MoERouter | None" = None):
        super().__init__()
        d_in, d_out = base.in_features, base.out_features
        r = (getattr(cfg, "dense_r", 0) or cfg.r) if dense else cfg.r
        if r > min(d_in, d_out):
            raise PluralignError(
                f"rank r={r} is larger than layer {name or layer_key} ({d_in} -> {d_out})",
                field="dense_r" if dense and getattr(cfg, "dense_r", 0) else "r",
            )
        self.base = base
        self.layer_key = layer_key
        self.dense = dense
        n_experts = 1 if dense else cfg.n_experts
        self.n_experts, self.r, self.shared_A = n_experts, r, (cfg.shared_A and not dense)
        self.scaling = cfg.alpha / r
        w = base.weight
        dtype = adapter_dtype(cfg, w.dtype)
        if router is not None:
            self.moe_router = router.to(device=w.device, dtype=dtype)
        n_a = r if self.shared_A else n_experts * r
        bound = 1.0 / math.sqrt(d_in)  # = nn.Linear / peft kaiming_uniform(a=sqrt(5)) bound
        self.lora_A = nn.Parameter(torch.empty(d_in, n_a, device=w.device, dtype=dtype).uniform_(-bound, bound))
        self.lora_B = nn.Parameter(torch.zeros(n_experts * r, d_out, device=w.device, dtype=dtype))
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

    @property
    def bias(self):
        return self.base.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        ctx = _ACTIVE.get()
        if ctx is not None and ctx.bypass:
            return out
        if self.dense:  # plain LoRA: one expert, gate 1, no router
            x2 = x.reshape(-1, x.shape[-1])
            dt = x.dtype
            xa = self.dropout(x2) @ _w(self.lora_A, dt)
            y = torch.addmm(out.reshape(-1, out.shape[-1]), xa, _w(self.lora_B, dt), alpha=self.scaling)
            return y.view(out.shape)
        router = self._modules.get("moe_router")
        if router is not None:  # route_from="module": this linear's own router, on its own input
            if ctx is None:
                ctx = _active_or_raise()
            entry = router.route(x if x.dim() == 3 else x.reshape(1, -1, x.shape[-1]), ctx)
        else:
            entry = None if ctx is None else ctx.gates.get(self.layer_key)
        if entry is None:
            raise PluralignError(
                f"no routing for {self.layer_key}: call the model through its adapted wrapper; with gradient "
                "checkpointing use the wrapper's gradient_checkpointing_enable()", field="model"
            )
        g, alpha = entry
        dt = x.dtype
        x2 = x.reshape(-1, x.shape[-1])
        xa = self.dropout(x2) @ _w(self.lora_A, dt)  # all A's in one matmul: [N, E*r] ([N, r] when shared)
        if self.shared_A:
            mixed = (g.view(-1, self.n_experts, self.r) * xa.unsqueeze(1)).view(g.shape)
        else:
            mixed = xa * g  # sparse gate, one weight per expert rank column
        # all B's in one matmul, scaled and added to the base output in the same kernel
        y = torch.addmm(out.reshape(-1, out.shape[-1]), mixed, _w(self.lora_B, dt), alpha=alpha)
        return y.view(out.shape)

    def extra_repr(self) -> str:
        if self.dense:
            return f"dense LoRA, r={self.r}"
        return f"experts={self.n_experts}, r={self.r}, shared_A={self.shared_A}"


def adapter_dtype(cfg: MoELoRAConfig, backbone_dtype: torch.dtype) -> torch.dtype:
    if cfg.adapter_dtype == "model":
        return backbone_dtype
    return torch.float32 if backbone_dtype in (torch.float16, torch.bfloat16) else backbone_dtype


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
    """Freeze ``model`` and wrap its target linears with experts (one router per decoder layer, or
    per linear with ``route_from="module"``) and its ``dense_modules`` with a plain LoRA.
    Returns the wrapped module names."""
    hidden = getattr(getattr(model, "config", None), "hidden_size", None)
    dense = tuple(t for t in getattr(cfg, "dense_modules", ()) if t not in cfg.target_modules)
    route_from = getattr(cfg, "route_from", "input_layernorm")
    targets = [
        (n, m) for n, m in model.named_modules()
        if isinstance(m, nn.Linear) and n.split(".")[-1] in (*cfg.target_modules, *dense)
    ]
    found = {n.split(".")[-1] for n, _ in targets}
    missing = [t for t in (*cfg.target_modules, *dense) if t not in found]
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
    keep = None if getattr(cfg, "layers_to_transform", None) is None else {int(i) for i in cfg.layers_to_transform}
    for name, lin in targets:
        layer_key = _decoder_layer_of(model, name)
        if layer_key is None:
            raise PluralignError(f"module {name} is not inside a decoder layer (nn.ModuleList)", field="target_modules")
        if keep is not None and int(layer_key.rsplit(".", 1)[-1]) not in keep:
            continue  # layers_to_transform: this decoder layer stays frozen and unadapted
        layer = model.get_submodule(layer_key)
        parent_name, _, leaf = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        if leaf not in cfg.target_modules:  # dense_modules: plain LoRA, no router
            setattr(parent, leaf, MoELoRALinear(lin, cfg, layer_key, name, dense=True))
            wrapped.append(name)
            continue
        if route_from == "module":  # HydraLoRA: a router per linear, reading that linear's input as is
            router = MoERouter(lin.in_features, cfg, name)
            router.input_is_normed = True
            setattr(parent, leaf, MoELoRALinear(lin, cfg, layer_key, name, router=router))
            wrapped.append(name)
            continue
        if layer_key not in routers:
            h = hidden or lin.in_features
            router = MoERouter(h, cfg, layer_key).to(device=lin.weight.device, dtype=adapter_dtype(cfg, lin.weight.dtype))
            layer.add_module("moe_router", router)
            _attach_layer_router(layer, router, cfg, route_from)
            routers[layer_key] = router
        if route_from == "post_attention_layernorm" and not _in_mlp(layer, lin):
            raise PluralignError(
                f"route_from=post_attention_layernorm routes at the MLP input, after attention: expert target {name} "
                "must be an MLP linear (e.g. gate_proj, up_proj, down_proj); put attention linears in dense_modules",
                field="target_modules",
            )
        setattr(parent, leaf, MoELoRALinear(lin, cfg, layer_key, name))
        wrapped.append(name)
    if not wrapped:
        raise PluralignError(
            f"layers_to_transform {sorted(keep)} selects no decoder layer that holds {', '.join(cfg.target_modules)}",
            field="layers_to_transform",
        )
    return wrapped


def _in_mlp(layer: nn.Module, lin: nn.Module) -> bool:
    mlp = getattr(layer, "mlp", None)
    return isinstance(mlp, nn.Module) and any(m is lin for m in mlp.modules())


def _attach_layer_router(layer: nn.Module, router: MoERouter, cfg: MoELoRAConfig, route_from: str) -> None:
    """Hook ``router`` on the decoder ``layer`` where ``route_from`` says it reads the token state."""
    if route_from == "post_attention_layernorm":
        # the MLP input: the output of post_attention_layernorm (Llama, Qwen, Mistral), read by a
        # pre-hook on the layer's mlp (also right where the MLP input has another norm, e.g. Gemma 2)
        mlp = getattr(layer, "mlp", None)
        norm = getattr(layer, "post_attention_layernorm", None)
        router.input_is_normed = True
        if isinstance(mlp, nn.Module):
            router._hook = mlp.register_forward_pre_hook(_router_pre_hook(router), with_kwargs=True)
        elif isinstance(norm, nn.Module):
            router._hook = norm.register_forward_hook(_router_norm_hook(router))
        else:
            raise PluralignError(
                f"route_from=post_attention_layernorm: decoder layer {router.layer_key} has neither mlp nor "
                "post_attention_layernorm", field="route_from",
            )
        return
    norm = getattr(layer, "input_layernorm", None)
    if cfg.route_from_norm and isinstance(norm, nn.Module):
        router.input_is_normed = True
        router._hook = norm.register_forward_hook(_router_norm_hook(router))
    else:
        router._hook = layer.register_forward_pre_hook(_router_pre_hook(router), with_kwargs=True)


def routers_of(model: nn.Module) -> dict[str, MoERouter]:
    return {m.layer_key: m for m in model.modules() if isinstance(m, MoERouter)}


def uninstall_moe_lora(model: nn.Module) -> nn.Module:
    """Undo :func:`install_moe_lora`: put the base linears back, drop routers and their hooks."""
    for name, mod in list(model.named_modules()):
        if isinstance(mod, MoELoRALinear):
            parent_name, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, leaf, mod.base)
    for name, mod in list(model.named_modules()):
        if hasattr(mod, "moe_router") and isinstance(mod.moe_router, MoERouter):
            mod.moe_router._hook.remove()
            del mod.moe_router
    return model
