"""Save / load adapters: ``adapter_model.safetensors`` (trainable weights only) and
``adapter_config.json`` (method, config, base model, backbone shape, profile encoder)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

from pluralign.adapters.config import config_from_dict, config_to_dict, get_method
from pluralign.errors import PluralignError

WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"
FORMAT = "pluralign-adapter"
VERSION = 1
_BACKBONE_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                  "intermediate_size", "vocab_size")


def backbone_fingerprint(model: nn.Module) -> dict:
    cfg = getattr(model, "config", None)
    if cfg is None:
        return {}
    if hasattr(cfg, "get_text_config"):
        cfg = cfg.get_text_config()
    return {k: getattr(cfg, k, None) for k in _BACKBONE_KEYS}


def adapter_state_dict(model) -> dict[str, torch.Tensor]:
    """The trainable tensors (deduplicated), detached, contiguous, on the CPU."""
    out, seen = {}, set()
    for n, p in model.named_parameters():
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            out[n] = p.detach().to("cpu").contiguous()
    return out


def save_adapter(model, path, *, base_model: str, extra: dict | None = None) -> Path:
    """Write ``path/adapter_model.safetensors`` and ``path/adapter_config.json``.

    Atomic: both files are written to a temporary sibling folder that then replaces ``path``; a
    failure leaves an earlier adapter at ``path`` untouched."""
    from safetensors.torch import save_file

    from pluralign.io import _umask, atomic_write_json

    path = Path(path)
    method = getattr(model, "method", None)
    if method is None:
        raise PluralignError("save_adapter needs a model from build_adapted_model / load_adapter", field="model")
    cfg = model.adapter_config
    state = adapter_state_dict(model)
    if not state:
        raise PluralignError("the model has no trainable parameters to save", field="model")
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "method": method,
        "config": config_to_dict(cfg),
        "base_model": str(base_model),
        "backbone": backbone_fingerprint(model),
        "profile_encoder": (
            {"name": cfg.profile_encoder, "dim": cfg.profile_dim} if getattr(model, "needs_profile", False) else None
        ),
        "n_tensors": len(state),
        "n_parameters": int(sum(t.numel() for t in state.values())),
        "extra": extra or {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    old = None
    try:
        save_file(state, str(tmp / WEIGHTS), metadata={"format": FORMAT, "method": method})
        atomic_write_json(tmp / CONFIG, meta)
        mask = _umask()  # mkdtemp (and safetensors) create 0700 / 0600: follow the umask like a plain open()
        os.chmod(tmp / WEIGHTS, 0o666 & ~mask)
        os.chmod(tmp, 0o777 & ~mask)
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
            os.replace(path, old / "x")
        os.replace(tmp, path)
    except BaseException:
        if old is not None and not path.exists():
            os.replace(old / "x", path)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return path


def read_adapter_config(path) -> dict:
    from pluralign.io import read_json

    path = Path(path)
    if not (path / CONFIG).exists():
        raise PluralignError(f"not an adapter folder (no {CONFIG})", file=path)
    meta = read_json(path / CONFIG)
    if meta.get("format") != FORMAT:
        raise PluralignError(f"not a pluralign adapter (format {meta.get('format')!r})", file=path / CONFIG, field="format")
    if not (path / WEIGHTS).exists():
        raise PluralignError(f"adapter weights missing ({WEIGHTS})", file=path)
    return meta


def load_adapter(base_model: nn.Module, path):
    """Rebuild the adapter of ``path`` on ``base_model`` (a fresh backbone, modified in place) and
    load its weights. Raises :class:`PluralignError` when the checkpoint was made for another
    backbone or does not match its recorded config."""
    from safetensors.torch import load_file

    from pluralign.adapters import build_adapted_model

    path = Path(path)
    meta = read_adapter_config(path)
    want = meta.get("backbone") or {}
    have = backbone_fingerprint(base_model)
    diff = [f"{k}: adapter {want[k]} vs model {have.get(k)}" for k in want if want[k] is not None and have.get(k) != want[k]]
    if diff:
        raise PluralignError(
            f"adapter was trained on another backbone ({meta.get('base_model')}): {'; '.join(diff)}",
            file=path / CONFIG, field="backbone",
        )
    method = meta["method"]
    get_method(method)
    cfg = config_from_dict(method, meta["config"])
    model = build_adapted_model(base_model, method, cfg)
    state = load_file(str(path / WEIGHTS))
    params = dict(model.named_parameters())
    expected = adapter_state_dict(model).keys()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in params]
    if missing or unexpected:
        what = (f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}")
        raise PluralignError(
            f"adapter weights do not match the {method} config ({len(missing)} missing, {len(unexpected)} unexpected; {what})",
            file=path / WEIGHTS,
        )
    with torch.no_grad():
        for k, t in state.items():
            p = params[k]
            if p.shape != t.shape:
                raise PluralignError(
                    f"tensor {k} has shape {tuple(t.shape)} in the checkpoint but {tuple(p.shape)} in the model",
                    file=path / WEIGHTS,
                )
            p.copy_(t.to(p.dtype))
    model.adapter_meta = meta
    return model


def load_adapter_for_eval(base_model: nn.Module, path, *, encoder=None, tokenizer=None):
    """``(model, profile_kwargs)``: the adapted model in eval mode, and for profile-routed methods
    ``profile_kwargs(profiles) -> {"profile_embeds": Tensor[B, D]}`` on the model's device, from the
    profile encoder recorded in the adapter (``encoder`` overrides it; a ``backbone`` encoder needs
    ``tokenizer``); else ``None``."""
    model = load_adapter(base_model, path)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    if model.is_moe:  # inference needs no fp32 master weights: compute in the backbone's dtype
        model.cast_adapters(model._activation_dtype())
    if not model.needs_profile:
        return model, None
    if encoder is None:
        from pluralign.models.profile_encoder import make_profile_encoder, needs_backbone

        enc_meta = model.adapter_meta.get("profile_encoder") or {}
        spec = enc_meta.get("name", model.adapter_config.profile_encoder)
        if needs_backbone(spec) and tokenizer is None:
            raise PluralignError(f"adapter's profile encoder {spec!r} needs the tokenizer", field="profile_encoder")
        encoder = make_profile_encoder(spec, backbone=(model, tokenizer) if needs_backbone(spec) else None)
    if encoder.dim != model.adapter_config.profile_dim:
        raise PluralignError(
            f"profile encoder {encoder.name} gives {encoder.dim}-d embeddings, the adapter expects {model.adapter_config.profile_dim}",
            file=Path(path) / CONFIG, field="profile_encoder",
        )
    device, dtype = model.device, model._activation_dtype()

    def profile_kwargs(profiles):
        return {"profile_embeds": encoder.encode(list(profiles)).to(device=device, dtype=dtype)}

    return model, profile_kwargs
