"""The bridge between a :class:`TrainConfig` and :mod:`pluralign.adapters`.

Every fine-tuning method is an adapter configuration (``pluralign.adapters.adapter_config``); this
module maps the training flags (rank, experts, ablations) onto it, builds the trainable model and
the profile encoder when the method routes on the profile.
"""

from __future__ import annotations

from typing import Any

from pluralign.errors import PluralignError

#: methods ``pluralign train --method`` accepts (same order as pluralign.adapters.ADAPTER_METHODS)
METHODS = ("cuma", "mixlora", "hydralora", "lora", "dora", "ptuning-v2", "full")


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


def build_trainable(base_model, cfg):
    """``(model, adapter_config, uses_profile)`` for ``cfg.method`` (or from ``cfg.init_adapter``)."""
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
        model = A.build_adapted_model(base_model, cfg.method, conf)
    return model, conf, bool(A.uses_profile(model))


def make_profile_encoder(name: str, device: str | None = None):
    from pluralign.models.profile_encoder import ProfileEncoder

    try:
        return ProfileEncoder(name, device=device) if device else ProfileEncoder(name)
    except TypeError:
        return ProfileEncoder(name)


def save_trained(model, path, *, base_model: str, extra: dict):
    A = _adapters()
    return A.save_adapter(model, path, base_model=base_model, extra=extra)
