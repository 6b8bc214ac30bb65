"""Configuration dataclasses of the adapter methods, and the method registry.

Each method is one entry of :data:`METHODS`: a config factory (defaults of the method) and a builder
that turns a backbone into a trainable model. ``cuma``, ``mixlora`` and ``hydralora`` are three
configurations of one MoE-LoRA layer (:mod:`pluralign.adapters.moe_lora`); ``lora``, ``dora`` and
``ptuning-v2`` are built with peft; ``full`` trains every weight.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

from pluralign.errors import PluralignError

ROUTER_INPUTS = ("hidden", "hidden+profile", "profile")
ROUTER_KINDS = ("mlp", "linear")


@dataclass
class MoELoRAConfig:
    """A mixture of LoRA experts on the target linear layers, with one router per decoder layer."""

    n_experts: int = field(default=8, metadata={"help": "Number of LoRA experts E per target layer."})
    r: int = field(default=8, metadata={"help": "Rank of each expert (A: in x r, B: r x out)."})
    alpha: float = field(default=16.0, metadata={"help": "LoRA scaling numerator: the update is scaled by alpha / r."})
    dropout: float = field(default=0.05, metadata={"help": "Dropout on the adapter input (as in LoRA); 0 disables it."})
    top_k: int = field(
        default=2,
        metadata={"help": "Experts used per token; softmax over the selected router logits only. top_k = n_experts gives soft (dense) routing."},
    )
    shared_A: bool = field(
        default=False, metadata={"help": "HydraLoRA: one A shared by all experts, one B per expert (else one A per expert)."}
    )
    router_input: str = field(
        default="hidden+profile",
        metadata={"help": "What the router reads: 'hidden' (token state), 'hidden+profile' (token state and the demographic embedding, CuMA) or 'profile' (the demographic embedding only, one routing per sample)."},
    )
    router: str = field(
        default="mlp", metadata={"help": "Router type: 'mlp' (2 layers, GELU, router_hidden units) or 'linear'."}
    )
    router_hidden: int = field(default=256, metadata={"help": "Hidden width of the MLP router."})
    route_from_norm: bool = field(
        default=True,
        metadata={"help": "Route from the output of the decoder layer's input norm (input_layernorm: the tensor q/k/v read) when the layer has one; else from the layer input, RMS-normalised by the router."},
    )
    target_modules: tuple[str, ...] = field(
        default=("q_proj", "v_proj"),
        metadata={"help": "Names (last path component) of the linear layers that get experts, e.g. q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj."},
    )
    balance_coef: float = field(
        default=0.01,
        metadata={"help": "Weight of the Switch/Mixtral load-balancing loss E * sum_i f_i * P_i (summed over layers; 1.0 per layer when balanced); 0 disables it."},
    )
    z_loss_coef: float = field(
        default=0.0, metadata={"help": "Weight of the router z-loss mean(logsumexp(logits)^2) (ST-MoE); 0 disables it."}
    )
    adapter_dtype: str = field(
        default="fp32",
        metadata={"help": "Storage dtype of expert and router weights: 'fp32' (master weights in fp32, cast to the activation dtype when used; safe for bf16 backbones) or 'model' (the backbone's dtype: no casts, fastest, pure low-precision training)."},
    )
    profile_dim: int = field(
        default=384, metadata={"help": "Size of the demographic embedding (384 for all-MiniLM-L6-v2); used by profile-routed routers."}
    )
    profile_encoder: str = field(
        default="minilm-l6",
        metadata={"help": "Sentence encoder of the profiles (short name, hub id or folder); recorded in the checkpoint and used at evaluation."},
    )

    @property
    def uses_profile(self) -> bool:
        return "profile" in self.router_input


@dataclass
class LoRASettings:
    """peft LoRA / DoRA on the target linear layers."""

    r: int = field(default=16, metadata={"help": "LoRA rank (16 = the active rank of an 8-expert top-2 r=8 mixture)."})
    alpha: float = field(default=32.0, metadata={"help": "LoRA alpha: the update is scaled by alpha / r."})
    dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA input."})
    target_modules: tuple[str, ...] = field(
        default=("q_proj", "v_proj"), metadata={"help": "Names (last path component) of the linear layers to adapt."}
    )
    use_dora: bool = field(default=False, metadata={"help": "Weight-decomposed LoRA (DoRA): learn a magnitude vector too."})


@dataclass
class PrefixSettings:
    """P-tuning v2 (deep prompt tuning): trainable key/value prefixes in every layer, via peft prefix tuning."""

    num_virtual_tokens: int = field(default=20, metadata={"help": "Number of prefix positions per layer."})
    prefix_projection: bool = field(
        default=False, metadata={"help": "Reparameterise the prefix with a 2-layer MLP (off in P-tuning v2)."}
    )
    encoder_hidden_size: int = field(default=512, metadata={"help": "Hidden size of the reparameterisation MLP when prefix_projection is on."})


@dataclass
class FullSettings:
    """Full fine-tuning: every backbone weight is trained."""

    train_embeddings: bool = field(default=True, metadata={"help": "Also train the token embeddings (and tied output layer)."})


@dataclass(frozen=True)
class AdapterMethod:
    name: str
    config_factory: Callable[[], Any]
    builder: Callable[[Any, Any], Any]  # (model, config) -> AdaptedModel
    summary: str


#: method name -> AdapterMethod (filled by the modules that implement them)
METHODS: dict[str, AdapterMethod] = {}

ADAPTER_METHODS: tuple = ("cuma", "mixlora", "hydralora", "lora", "dora", "ptuning-v2", "full")


def register_method(name: str, config_factory: Callable[[], Any], builder: Callable, summary: str) -> None:
    METHODS[name] = AdapterMethod(name, config_factory, builder, summary)


def _ensure_registered() -> None:
    if not METHODS:
        from pluralign.adapters import builtin  # noqa: F401  (registers the built-in methods)


def get_method(method: str) -> AdapterMethod:
    _ensure_registered()
    if method not in METHODS:
        raise PluralignError(f"unknown adapter method {method!r} (available: {', '.join(METHODS)})", field="method")
    return METHODS[method]


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
        if k == "target_modules":
            v = tuple(x.strip() for x in v.split(",") if x.strip()) if isinstance(v, str) else tuple(v)
        setattr(cfg, k, v)
    validate_config(method, cfg)
    return cfg


def config_from_dict(method: str, data: dict) -> Any:
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
        if not 1 <= cfg.top_k <= cfg.n_experts:
            raise PluralignError(
                f"top_k must be between 1 and n_experts={cfg.n_experts}, got {cfg.top_k}", field="top_k"
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
    elif isinstance(cfg, LoRASettings):
        if cfg.r < 1:
            raise PluralignError(f"rank r must be >= 1, got {cfg.r}", field="r")
        if not cfg.target_modules:
            raise PluralignError("target_modules is empty", field="target_modules")
    elif isinstance(cfg, PrefixSettings):
        if cfg.num_virtual_tokens < 1:
            raise PluralignError(f"num_virtual_tokens must be >= 1, got {cfg.num_virtual_tokens}", field="num_virtual_tokens")
