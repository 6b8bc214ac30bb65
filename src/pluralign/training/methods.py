"""The bridge between a :class:`TrainConfig` and :mod:`pluralign.adapters`.

Every fine-tuning method is an adapter configuration (``pluralign.adapters.adapter_config``); this
module maps the training flags (rank, experts, ablations) onto it, builds the trainable model and
the profile encoder when the method routes on the profile.
"""

from __future__ import annotations

from typing import Any

from pluralign.errors import PluralignError

#: methods ``pluralign train --method`` accepts (same order as pluralign.adapters.ADAPTER_METHODS)
METHODS = ("cuma", "mixlora", "hydralora", "mixlora-qv", "hydralora-qv", "lora", "dora", "ptuning-v2", "full")


def _adapters():
    try:
        import pluralign.adapters as A

        A.build_adapted_model  # noqa: B018
        return A
    except (ImportError, AttributeError):
        raise PluralignError("the adapters package (pluralign.adapters) is not available in this installation") from None


def adapter_overrides(cfg) -> dict[str, Any]:
    """Training flags → adapter config fields (only the ones the user set; those a method's config
    does not have, e.g. ``experts`` for ``lora``, are dropped by :func:`make_adapter_config`)."""
    o: dict[str, Any] = {}
    if cfg.rank is not None:
        o["r"] = cfg.rank
    if cfg.alpha is not None:
        o["alpha"] = cfg.alpha
    if cfg.experts is not None:
        o["n_experts"] = cfg.experts
    if cfg.top_k is not None:
        o["top_k"] = cfg.top_k
    if cfg.target_modules:
        o["target_modules"] = list(cfg.target_modules)
    if not cfg.demographic_routing:
        o["router_input"] = "hidden"
    if not cfg.balance_loss:
        o["balance_coef"] = 0.0
    if cfg.profile_encoder:
        o["profile_encoder"] = cfg.profile_encoder
    return o


def make_adapter_config(cfg):
    """The adapter config of ``cfg.method`` with the training flags applied (ablations included)."""
    import dataclasses

    A = _adapters()
    defaults = A.adapter_config(cfg.method)
    names = {f.name for f in dataclasses.fields(defaults)}
    over = {k: v for k, v in adapter_overrides(cfg).items() if k in names}
    if cfg.soft_routing:
        if "top_k" not in names:
            raise PluralignError(f"--soft-routing applies to mixture methods, not {cfg.method!r}", field="soft_routing")
        over["top_k"] = over.get("n_experts", defaults.n_experts)
    if not cfg.demographic_routing and "router_input" not in names:
        raise PluralignError(f"--no-demographic-routing applies to cuma, not {cfg.method!r}", field="demographic_routing")
    return A.adapter_config(cfg.method, **over)


def method_uses_profile(cfg) -> bool:
    """Whether the adapter of ``cfg`` (or of ``cfg.init_adapter``) routes on the profile."""
    A = _adapters()
    if cfg.init_adapter:
        return bool(A.read_adapter_config(cfg.init_adapter).get("profile_encoder"))
    conf = make_adapter_config(cfg)
    return bool(getattr(conf, "uses_profile", False))


def with_map_wave(spec: str, before: int | None) -> str:
    """``spec`` with each plain ``culture-map`` part pinned to the wave before ``before``."""
    if before is None:
        return spec
    return "+".join(f"culture-map:before={before}" if p.strip() == "culture-map" else p.strip() for p in str(spec).split("+"))


def encoder_spec(cfg) -> str:
    """The profile-encoder spec of a run: the one recorded in ``--init-adapter`` when starting from
    one (a DPO stage must embed profiles as its SFT stage did), else ``cfg.profile_encoder``."""
    from pluralign.models.profile_encoder import DEFAULT_ENCODER

    if not cfg.init_adapter:
        return with_map_wave(cfg.profile_encoder, getattr(cfg, "map_before", None))
    meta = _adapters().read_adapter_config(cfg.init_adapter)
    rec = (meta.get("profile_encoder") or {}).get("name") or meta.get("config", {}).get("profile_encoder")
    if rec is None:
        return cfg.profile_encoder
    if cfg.profile_encoder not in (rec, DEFAULT_ENCODER):
        raise PluralignError(
            f"--profile-encoder {cfg.profile_encoder!r} differs from {rec!r}, the encoder recorded in --init-adapter",
            file=cfg.init_adapter, field="profile_encoder",
        )
    return rec


def top_layer_indices(base_model, n: int) -> list[int]:
    cfg = base_model.config.get_text_config() if hasattr(base_model.config, "get_text_config") else base_model.config
    total = int(cfg.num_hidden_layers)
    if n > total:
        raise PluralignError(f"--top-layers {n} is more than the backbone's {total} decoder layers", field="top_layers")
    return list(range(total - n, total))


def build_trainable(base_model, cfg, *, profile_dim: int | None = None):
    """``(model, adapter_config, uses_profile)`` for ``cfg.method`` (or from ``cfg.init_adapter``).
    ``profile_dim``: the profile encoder's embedding size (the router's profile input)."""
    import dataclasses

    A = _adapters()
    if cfg.init_adapter:
        meta = A.read_adapter_config(cfg.init_adapter)
        if meta.get("method") != cfg.method:
            raise PluralignError(
                f"--init-adapter holds a {meta.get('method')!r} adapter but --method is {cfg.method!r}",
                file=cfg.init_adapter, field="method",
            )
        model = A.load_adapter(base_model, cfg.init_adapter)
        conf = getattr(model, "adapter_config", None)
    else:
        conf = make_adapter_config(cfg)
        names = {f.name for f in dataclasses.fields(conf)}
        over = {}
        if cfg.top_layers:
            if "layers_to_transform" not in names:
                raise PluralignError(
                    f"--top-layers applies to lora, dora and the MoE-LoRA methods, not {cfg.method!r}", field="top_layers"
                )
            over["layers_to_transform"] = top_layer_indices(base_model, cfg.top_layers)
        if profile_dim is not None and getattr(conf, "uses_profile", False):
            over["profile_dim"] = int(profile_dim)
        for k, v in over.items():
            setattr(conf, k, tuple(v) if isinstance(v, list) else v)
        model = A.build_adapted_model(base_model, cfg.method, conf)
    return model, conf, bool(A.uses_profile(model))


def make_profile_encoder(name: str, device: str | None = None, *, backbone: tuple | None = None):
    from pluralign.models.profile_encoder import make_profile_encoder as make

    return make(name, backbone=backbone, device=device)


def save_trained(model, path, *, base_model: str, extra: dict):
    A = _adapters()
    return A.save_adapter(model, path, base_model=base_model, extra=extra)
