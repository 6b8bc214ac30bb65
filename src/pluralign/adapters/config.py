"""Configuration dataclasses of the adapter methods, and the method registry.

Each method is one entry of :data:`METHODS`: a config factory (defaults of the method) and a builder
that turns a backbone into a trainable model. ``cuma``, ``mixlora``, ``hydralora`` and the CuMA
authors' q/v baselines ``mixlora-qv`` / ``hydralora-qv`` are configurations of one MoE-LoRA layer
(:mod:`pluralign.adapters.moe_lora`); ``lora``, ``dora`` and ``ptuning-v2`` are built with peft;
``full`` trains every weight.

Saved adapters record their config; fields added since (profile_norm, route_from, dense_modules,
dense_r) are read with the value that reproduces the older behaviour when a saved config lacks them
(:data:`LEGACY_DEFAULTS`, :func:`config_from_dict`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

from pluralign._fields import helpfield
from pluralign.errors import PluralignError
from pluralign.registry import Registry

ROUTER_INPUTS = ("hidden", "hidden+profile", "profile")
ROUTER_KINDS = ("mlp", "linear")
ROUTE_FROM = ("input_layernorm", "post_attention_layernorm", "module")
PROFILE_NORMS = ("rms", "none")

#: MoELoRAConfig fields added after the first adapter format, with the value that reproduces what an
#: adapter saved without them did (config_from_dict fills them in when a saved config lacks them)
LEGACY_DEFAULTS = {"profile_norm": "none", "route_from": "input_layernorm", "dense_modules": (), "dense_r": 0}


@dataclass
class MoELoRAConfig:
    """A mixture of LoRA experts on the target linear layers, with one router per decoder layer."""

    n_experts: int = helpfield(8, "Number of LoRA experts E per target layer.")
    r: int = helpfield(8, "Rank of each expert (A: in x r, B: r x out).")
    alpha: float = helpfield(16.0, "LoRA scaling numerator: the update is scaled by alpha / r.")
    dropout: float = helpfield(0.05, "Dropout on the adapter input (as in LoRA); 0 disables it.")
    top_k: int = helpfield(2, "Experts used per token; softmax over the selected router logits only. top_k = n_experts (or 0: all experts, whatever n_experts) gives soft (dense) routing.")
    shared_A: bool = helpfield(False, "HydraLoRA: one A shared by all experts, one B per expert (else one A per expert).")
    router_input: str = helpfield("hidden+profile", "What the router reads: 'hidden' (token state), 'hidden+profile' (token state and the demographic embedding, CuMA) or 'profile' (the demographic embedding only, one routing per sample).")
    router: str = helpfield("mlp", "Router type: 'mlp' (2 layers, GELU, router_hidden units) or 'linear'.")
    router_hidden: int = helpfield(256, "Hidden width of the MLP router.")
    route_from_norm: bool = helpfield(True, "Route from the output of the decoder layer's input norm (input_layernorm: the tensor q/k/v read) when the layer has one; else from the layer input, RMS-normalised by the router. Only for route_from='input_layernorm'.")
    route_from: str = helpfield("input_layernorm", "Where the router reads the token state: 'input_layernorm' (one router per decoder layer, on the attention input; CuMA), 'post_attention_layernorm' (one router per decoder layer, on the MLP input, i.e. after attention; MixLoRA; expert targets must then be MLP linears) or 'module' (one router per target linear, on that linear's own input, as is; HydraLoRA).")
    target_modules: tuple[str, ...] = helpfield(("q_proj", "v_proj"), "Names (last path component) of the linear layers that get experts, e.g. q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj.")
    dense_modules: tuple[str, ...] = helpfield((), "Names of linear layers that get one plain, always-on LoRA (no experts, no router), e.g. MixLoRA's q_proj,k_proj,v_proj,o_proj; a name also in target_modules gets experts instead.")
    dense_r: int = helpfield(0, "Rank of the plain LoRA of dense_modules (0: r); scaled by alpha / dense_r.")
    balance_coef: float = helpfield(0.01, "Weight of the Switch/Mixtral load-balancing loss E * sum_i f_i * P_i (summed over layers; 1.0 per layer when balanced); 0 disables it.")
    z_loss_coef: float = helpfield(0.0, "Weight of the router z-loss mean(logsumexp(logits)^2) (ST-MoE); 0 disables it.")
    adapter_dtype: str = helpfield("fp32", "Storage dtype of expert and router weights: 'fp32' (master weights in fp32, cast to the activation dtype when used; safe for bf16 backbones) or 'model' (the backbone's dtype: no casts, fastest, pure low-precision training).")
    profile_dim: int = helpfield(384, "Size of the demographic embedding (384 for all-MiniLM-L6-v2); used by profile-routed routers.")
    profile_norm: str = helpfield("rms", "Scale of the profile embedding d in the router: 'rms' (d * sqrt(D) / ||d||, per-unit scale 1 like the RMS-normalised token state; with hidden+profile routing W_h and W_d are initialised so that W_h h and W_d d have equal variance, and the profile moves the gates as much as the token from step 0) or 'none' (d as encoded: a unit-norm MiniLM embedding gives W_d d ~20x smaller than W_h h at initialisation; adapters saved before this option).")
    profile_encoder: str = helpfield("minilm-l6", "Profile encoder spec (see pluralign.models.profile_encoder.make_profile_encoder): a sentence encoder (short name, hub id or folder), 'backbone' (the LLM's own mean-pooled hidden state of the profile text), 'culture-map' (numeric cultural-map features) or a '+'-joined concatenation; recorded in the checkpoint and reused at evaluation.")
    layers_to_transform: tuple[int, ...] | None = helpfield(None, "Indices of the decoder layers that get experts and a router (None: every layer), as peft's layers_to_transform. Adapting only the top layers lets training cache the frozen trunk below them (TrainConfig.top_layers).")

    @property
    def uses_profile(self) -> bool:
        return "profile" in self.router_input


@dataclass
class LoRASettings:
    """peft LoRA / DoRA on the target linear layers."""

    r: int = helpfield(16, "LoRA rank (16 = the active rank of an 8-expert top-2 r=8 mixture).")
    alpha: float = helpfield(32.0, "LoRA alpha: the update is scaled by alpha / r.")
    dropout: float = helpfield(0.05, "Dropout on the LoRA input.")
    target_modules: tuple[str, ...] = helpfield(("q_proj", "v_proj"), "Names (last path component) of the linear layers to adapt.")
    use_dora: bool = helpfield(False, "Weight-decomposed LoRA (DoRA): learn a magnitude vector too.")
    layers_to_transform: tuple[int, ...] | None = helpfield(None, "Indices of the decoder layers to adapt (None: every layer); peft's layers_to_transform.")


@dataclass
class PrefixSettings:
    """P-tuning v2 (deep prompt tuning): trainable key/value prefixes in every layer, via peft prefix tuning."""

    num_virtual_tokens: int = helpfield(20, "Number of prefix positions per layer.")
    prefix_projection: bool = helpfield(False, "Reparameterise the prefix with a 2-layer MLP (off in P-tuning v2).")
    encoder_hidden_size: int = helpfield(512, "Hidden size of the reparameterisation MLP when prefix_projection is on.")


@dataclass
class FullSettings:
    """Full fine-tuning: every backbone weight is trained."""

    train_embeddings: bool = helpfield(True, "Also train the token embeddings (and tied output layer).")


@dataclass(frozen=True)
class AdapterMethod:
    name: str
    config_factory: Callable[[], Any]
    builder: Callable[[Any, Any], Any]  # (model, config) -> AdaptedModel
    summary: str


#: method name -> AdapterMethod (filled by the modules that implement them; the built-in ones by
#: :mod:`pluralign.adapters.builtin`, which ``import pluralign.adapters`` loads)
METHODS: Registry[AdapterMethod] = Registry("adapter method", field="method")

ADAPTER_METHODS: tuple = ("cuma", "mixlora", "hydralora", "mixlora-qv", "hydralora-qv", "lora", "dora", "ptuning-v2", "full")


def register_method(name: str, config_factory: Callable[[], Any], builder: Callable, summary: str) -> None:
    METHODS.add(name, AdapterMethod(name, config_factory, builder, summary))


def get_method(method: str) -> AdapterMethod:
    return METHODS.get(method)


def adapter_config(method: str, **overrides) -> Any:
    """The config dataclass of ``method`` with its defaults and ``overrides`` applied.

    ``target_modules`` may be given as a comma-separated string. Unknown fields raise
    :class:`PluralignError` naming the valid ones.
    """
    m = get_method(method)
    cfg = m.config_factory()
    names = {f.name: f for f in dataclasses.fields(cfg)}
    for k, v in overrides.items():
        if v is None:
            continue
        if k not in names:
            raise PluralignError(
                f"unknown option for method {method!r} (known: {', '.join(names)})", field=k
            )
        if k in ("target_modules", "dense_modules"):
            v = tuple(x.strip() for x in v.split(",") if x.strip()) if isinstance(v, str) else tuple(v)
        if k == "layers_to_transform" and v is not None:
            v = tuple(int(x) for x in (v.split(",") if isinstance(v, str) else v))
        setattr(cfg, k, v)
    validate_config(method, cfg)
    return cfg


def config_from_dict(method: str, data: dict) -> Any:
    """The config of a saved adapter: ``data`` over the method's defaults, where a MoE-LoRA field that
    ``data`` lacks (saved before the field existed) takes its :data:`LEGACY_DEFAULTS` value, so that
    old adapters load with the behaviour they were trained with."""
    if isinstance(get_method(method).config_factory(), MoELoRAConfig):
        data = {**{k: v for k, v in LEGACY_DEFAULTS.items() if k not in data}, **data}
    return adapter_config(method, **data)


def config_to_dict(cfg: Any) -> dict:
    d = dataclasses.asdict(cfg)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def config_help(method: str) -> dict[str, str]:
    """field name -> help text of a method's config (for ``--help`` and docs)."""
    cfg = get_method(method).config_factory()
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(cfg)}


def validate_config(method: str, cfg: Any) -> None:
    if isinstance(cfg, MoELoRAConfig):
        if cfg.n_experts < 1:
            raise PluralignError(f"n_experts must be >= 1, got {cfg.n_experts}", field="n_experts")
        if not 0 <= cfg.top_k <= cfg.n_experts:
            raise PluralignError(
                f"top_k must be between 1 and n_experts={cfg.n_experts} (or 0: all experts), got {cfg.top_k}", field="top_k"
            )
        if cfg.r < 1:
            raise PluralignError(f"rank r must be >= 1, got {cfg.r}", field="r")
        if cfg.router_input not in ROUTER_INPUTS:
            raise PluralignError(f"router_input must be one of {', '.join(ROUTER_INPUTS)}, got {cfg.router_input!r}", field="router_input")
        if cfg.router not in ROUTER_KINDS:
            raise PluralignError(f"router must be one of {', '.join(ROUTER_KINDS)}, got {cfg.router!r}", field="router")
        if not 0.0 <= cfg.dropout < 1.0:
            raise PluralignError(f"dropout must be in [0, 1), got {cfg.dropout}", field="dropout")
        if cfg.uses_profile and cfg.profile_dim < 1:
            raise PluralignError(f"profile_dim must be >= 1, got {cfg.profile_dim}", field="profile_dim")
        if not cfg.target_modules:
            raise PluralignError("target_modules is empty", field="target_modules")
        if cfg.adapter_dtype not in ("fp32", "model"):
            raise PluralignError(f"adapter_dtype must be fp32 or model, got {cfg.adapter_dtype!r}", field="adapter_dtype")
        if cfg.route_from not in ROUTE_FROM:
            raise PluralignError(f"route_from must be one of {', '.join(ROUTE_FROM)}, got {cfg.route_from!r}", field="route_from")
        if cfg.profile_norm not in PROFILE_NORMS:
            raise PluralignError(f"profile_norm must be one of {', '.join(PROFILE_NORMS)}, got {cfg.profile_norm!r}", field="profile_norm")
        if cfg.dense_r < 0:
            raise PluralignError(f"dense_r must be >= 0 (0: r), got {cfg.dense_r}", field="dense_r")
    elif isinstance(cfg, LoRASettings):
        if cfg.r < 1:
            raise PluralignError(f"rank r must be >= 1, got {cfg.r}", field="r")
        if not cfg.target_modules:
            raise PluralignError("target_modules is empty", field="target_modules")
    elif isinstance(cfg, PrefixSettings):
        if cfg.num_virtual_tokens < 1:
            raise PluralignError(f"num_virtual_tokens must be >= 1, got {cfg.num_virtual_tokens}", field="num_virtual_tokens")
