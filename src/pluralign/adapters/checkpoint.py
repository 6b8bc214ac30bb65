"""Save / load adapters. An adapter folder holds ``adapter_model.safetensors`` (the trainable
weights only) and pluralign's record of the adapter (method, config, base model, backbone shape,
profile encoder, the run's ``extra`` record, the weights' layout, size and SHA-256):

- the peft methods (LoRA, DoRA, P-tuning v2 without the reparameterisation MLP): the weights and
  ``adapter_config.json`` are peft's own files, as ``PeftModel.save_pretrained`` writes them, so
  ``PeftModel.from_pretrained(base, folder)`` (and vLLM's multi-LoRA) load the adapter; the record
  is ``pluralign_adapter.json`` (``weights_format: "peft"``);
- the other methods (the MoE-LoRA family, full fine-tuning, prefixes with the MLP), which peft
  cannot represent or resume: the weights under pluralign's parameter names, the record in
  ``adapter_config.json`` (``weights_format: "pluralign"``), as every method was saved before
  format version 2 -- such older folders load as before.

Every reader of an adapter goes through :func:`read_adapter_config` (the record checked field by
field, the weights file's header and length checked against each other: a truncated file is found
before any model loads) and :func:`load_adapter` (the checksum, and every tensor finite), so a
damaged adapter is one :class:`PluralignError` naming the file (and field or tensor) in ``eval
--adapter``, ``serve``, ``train --init-adapter`` and the analyses alike.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import struct
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

from pluralign.adapters.config import config_from_dict, config_to_dict, get_method
from pluralign.errors import PluralignError

WEIGHTS = "adapter_model.safetensors"
#: peft's config (peft methods), else pluralign's record
CONFIG = "adapter_config.json"
#: pluralign's record of an adapter saved in peft's files
RECORD = "pluralign_adapter.json"
FORMAT = "pluralign-adapter"
VERSION = 2
#: ``weights_format`` of the record: tensor names as peft saves them, or pluralign's parameter names
PEFT_WEIGHTS, OWN_WEIGHTS = "peft", "pluralign"
_BACKBONE_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                  "intermediate_size", "vocab_size")


def backbone_fingerprint(model: nn.Module) -> dict:
    """The backbone's shape (config keys) and ``weights_checksum``: a checksum of its input
    embeddings, so another model of the same shape is told apart from the one an adapter was
    trained on."""
    cfg = getattr(model, "config", None)
    if cfg is None:
        return {}
    if hasattr(cfg, "get_text_config"):
        cfg = cfg.get_text_config()
    out = {k: getattr(cfg, k, None) for k in _BACKBONE_KEYS}
    ck = weights_checksum(model)
    if ck is not None:
        out["weights_checksum"], out["weights_scale"] = ck
    return out


def weights_checksum(model: nn.Module) -> tuple[float, float] | None:
    """``(signed sum, sum of |w|)`` over the first and last 4096 values of the input embedding
    matrix (float64), each rounded to 8 significant digits; None when the model has no input
    embeddings."""
    try:
        w = model.get_input_embeddings().weight.detach().flatten()
    except (AttributeError, NotImplementedError, TypeError):
        return None
    if w.numel() == 0 or w.device.type == "meta":
        return None
    part = torch.cat([w[:4096], w[-4096:]]).double()
    return float(f"{float(part.sum()):.8g}"), float(f"{float(part.abs().sum()):.8g}")


def _same_checksum(want: dict, have: dict) -> bool:
    """The signed sums agree within 1e-3 of the scale (a bf16 / fp16 copy of the same weights
    passes; another model of the same shape, whose signed sum differs by about sqrt(n) x its
    typical value, does not)."""
    scale = max(float(want.get("weights_scale") or 0.0), float(have.get("weights_scale") or 0.0), 1e-12)
    return abs(float(want["weights_checksum"]) - float(have["weights_checksum"])) <= 1e-3 * scale


def _saved_fingerprint(model) -> dict:
    """The fingerprint an adapter records; without the weights checksum when the embeddings are
    trained (full fine-tuning: the saved weights replace the base's anyway)."""
    fp = backbone_fingerprint(model)
    try:
        trained = model.get_input_embeddings().weight.requires_grad
    except (AttributeError, NotImplementedError, TypeError):
        trained = False
    if trained:
        fp.pop("weights_checksum", None)
        fp.pop("weights_scale", None)
    return fp


def adapter_state_dict(model) -> dict[str, torch.Tensor]:
    """The trainable tensors (deduplicated), detached, contiguous, on the CPU."""
    out, seen = {}, set()
    for n, p in model.named_parameters():
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            out[n] = p.detach().to("cpu").contiguous()
    return out


def record_file(path) -> Path:
    """The file holding pluralign's record of the adapter folder ``path``: ``pluralign_adapter.json``
    beside peft's files, else ``adapter_config.json`` (methods peft cannot represent, and folders
    saved before format version 2). Checks nothing."""
    path = Path(path)
    return path / CONFIG if not (path / RECORD).exists() and (path / CONFIG).exists() else path / RECORD


def _peft_model(model):
    """The peft model inside ``model`` (an :class:`AdaptedModel`) whose saved weights are exactly
    its trainable tensors, else None. Prefix tuning with ``prefix_projection`` is left out: peft
    saves the MLP's output only, which cannot resume training."""
    inner = getattr(model, "_modules", {}).get("model")
    if not (hasattr(inner, "peft_config") and hasattr(inner, "save_pretrained")):
        return None
    if list(inner.peft_config) != ["default"] or getattr(inner.peft_config["default"], "prefix_projection", False):
        return None
    return inner


def save_adapter(model, path, *, base_model: str, extra: dict | None = None) -> Path:
    """Write the adapter folder ``path``: ``adapter_model.safetensors`` and the record; for the
    peft methods peft's ``adapter_config.json`` and weights (``PeftModel.from_pretrained`` loads
    the folder) with the record in ``pluralign_adapter.json``, else the record in
    ``adapter_config.json`` and the weights under pluralign's parameter names.

    Atomic: the files are written to a temporary sibling folder that then replaces ``path``; a
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
    bad = next((k for k, t in state.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())), None)
    if bad is not None:
        raise PluralignError(f"tensor {bad} holds NaN or inf values: the adapter is not saved (the training diverged?)",
                             file=path, field=bad)
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "method": method,
        "config": config_to_dict(cfg),
        "base_model": str(base_model),
        "backbone": _saved_fingerprint(model),
        "profile_encoder": (
            {"name": cfg.profile_encoder, "dim": cfg.profile_dim} if getattr(model, "needs_profile", False) else None
        ),
        "n_tensors": len(state),
        "n_parameters": int(sum(t.numel() for t in state.values())),
        "extra": extra or {},
    }
    peft_model = _peft_model(model)
    meta["weights_format"] = PEFT_WEIGHTS if peft_model is not None else OWN_WEIGHTS
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    old = None
    try:
        if peft_model is not None:
            # peft's adapter_config.json and adapter_model.safetensors, as peft writes them (no
            # embedding layers are trained, so none are saved: no look-up of the base model's files)
            peft_model.save_pretrained(str(tmp), save_embedding_layers=False)
            (tmp / "README.md").unlink(missing_ok=True)  # peft's model-card stub
            os.chmod(tmp / CONFIG, 0o666 & ~_umask())
        else:
            save_file(state, str(tmp / WEIGHTS), metadata={"format": FORMAT, "method": method})
        meta["weights"] = {"bytes": (tmp / WEIGHTS).stat().st_size, "sha256": _sha256(tmp / WEIGHTS)}
        atomic_write_json(tmp / (RECORD if peft_model is not None else CONFIG), meta)
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


def _sha256(f: Path) -> str:
    h = hashlib.sha256()
    with open(f, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _field_ok(default, value, name: str) -> bool:
    """Whether ``value`` (read from JSON) fits a config field whose default is ``default``."""
    if name == "layers_to_transform":
        return value is None or (isinstance(value, list) and all(_is_int(x) and x >= 0 for x in value))
    if isinstance(default, bool):
        return isinstance(value, bool)
    if _is_int(default):
        return _is_int(value)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if isinstance(default, str):
        return isinstance(value, str)
    if isinstance(default, tuple):
        return isinstance(value, str) or (isinstance(value, list) and all(isinstance(x, str) for x in value))
    return value is None or isinstance(value, (str, int, float, bool, list))


def _check_meta(meta, file: Path) -> dict:
    """The fields of an adapter record that loading reads, each of the right type."""
    if not isinstance(meta, dict):
        raise PluralignError(f"an adapter config must be a JSON object, got a {type(meta).__name__}", file=file)
    if file.name == CONFIG and meta.get("peft_type") == "PROMPT_TUNING" and "format" not in meta:
        raise PluralignError("a soft prompt (a peft PromptTuning adapter, e.g. from `pluralign softprompt`), not an adapter: "
                             "give it as a soft prompt (--soft-prompt)", file=file)
    if file.name == CONFIG and "peft_type" in meta and "format" not in meta:
        raise PluralignError(f"a peft adapter without pluralign's record ({RECORD}): not saved by pluralign", file=file)
    if meta.get("format") != FORMAT:
        raise PluralignError(f"not a pluralign adapter (format {meta.get('format')!r})", file=file, field="format")
    method = meta.get("method")
    if not isinstance(method, str):
        raise PluralignError(f"'method' must be a method name, got {method!r}", file=file, field="method")
    try:
        m = get_method(method)
    except PluralignError as e:
        raise PluralignError(e.message, file=file, field="method") from None
    cfg = meta.get("config")
    if not isinstance(cfg, dict):
        raise PluralignError(f"'config' must be an object of {method} settings, got {type(cfg).__name__}", file=file, field="config")
    defaults = m.config_factory()
    fields = {f.name: getattr(defaults, f.name) for f in dataclasses.fields(defaults)}
    for k, v in cfg.items():
        if k not in fields:
            raise PluralignError(f"unknown {method} setting (known: {', '.join(fields)})", file=file, field=f"config.{k}")
        if not _field_ok(fields[k], v, k):
            raise PluralignError(f"{v!r} is not a valid value (the default is {fields[k]!r})", file=file, field=f"config.{k}")
    for key, kind in (("backbone", dict), ("extra", dict), ("profile_encoder", dict), ("base_model", str), ("weights", dict)):
        if meta.get(key) is not None and not isinstance(meta[key], kind):
            raise PluralignError(f"'{key}' must be {'an object' if kind is dict else 'a string'}, got {type(meta[key]).__name__}",
                                 file=file, field=key)
    if any(isinstance(v, (dict, list)) for v in (meta.get("backbone") or {}).values()):
        raise PluralignError("'backbone' must map config names to single values", file=file, field="backbone")
    enc = meta.get("profile_encoder")
    if enc is not None and (not isinstance(enc.get("name"), str) or not _is_int(enc.get("dim")) or enc["dim"] < 1):
        raise PluralignError("'profile_encoder' must hold a 'name' (string) and a 'dim' (a positive whole number)",
                             file=file, field="profile_encoder")
    w = meta.get("weights")
    if w is not None and (not _is_int(w.get("bytes")) or not isinstance(w.get("sha256"), str)):
        raise PluralignError("'weights' must hold 'bytes' and 'sha256'", file=file, field="weights")
    if meta.get("weights_format", OWN_WEIGHTS) not in (PEFT_WEIGHTS, OWN_WEIGHTS):
        raise PluralignError(f"'weights_format' must be {PEFT_WEIGHTS!r} or {OWN_WEIGHTS!r}, got {meta['weights_format']!r}",
                             file=file, field="weights_format")
    return meta


def weights_problem(f: str | Path) -> str | None:
    """Why the safetensors file ``f`` cannot be read whole (None when its header is sound and the
    file is as long as the header says). Reads the header only: cheap for any size."""
    f = Path(f)
    try:
        size = f.stat().st_size
        with open(f, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                return f"truncated ({size} bytes, not even a header)"
            n = struct.unpack("<Q", head)[0]
            if n > min(size - 8, 100 * 2**20):
                return f"truncated or not a safetensors file (header of {n} bytes in a file of {size})"
            header = json.loads(fh.read(n).decode("utf-8"))
    except OSError as e:
        return f"cannot read ({e.strerror or e})"
    except (ValueError, UnicodeDecodeError):
        return "corrupted header (not a safetensors file?)"
    if not isinstance(header, dict):
        return "corrupted header (not a safetensors file?)"
    end = 0
    for k, v in header.items():
        if k == "__metadata__":
            continue
        offs = v.get("data_offsets") if isinstance(v, dict) else None
        if not (isinstance(offs, list) and len(offs) == 2 and all(_is_int(o) for o in offs) and 0 <= offs[0] <= offs[1]):
            return f"corrupted header (tensor {k})"
        end = max(end, offs[1])
    if 8 + n + end != size:
        return f"truncated or padded: the header describes {8 + n + end} bytes, the file has {size}"
    return None


def torch_file_problem(f: str | Path) -> str | None:
    """Why a ``torch.save`` file (a checkpoint's optimizer.pt / scheduler.pt / rng_state.pth) cannot
    be loaded whole (None when it can): a truncated file lacks the zip directory at its end, or
    a member reaches past the end. Reads the zip directory only, never the tensors."""
    import zipfile

    f = Path(f)
    try:
        size = f.stat().st_size
        with zipfile.ZipFile(f) as z:
            infos = z.infolist()
    except OSError as e:
        return f"cannot read ({e.strerror or e})"
    except (zipfile.BadZipFile, ValueError, EOFError):
        return "truncated or not a torch.save file"
    if not infos:
        return "empty archive"
    end = max(i.header_offset + i.compress_size for i in infos)
    if end > size:
        return f"truncated ({size} bytes; its directory describes {end})"
    return None


def read_adapter_config(path, *, check_weights: bool = False) -> dict:
    """The checked record of the adapter folder ``path`` (see :func:`record_file`; its weights
    file must exist). ``check_weights``: also read the weights file's header and check that the file is whole
    (its length against the header and the recorded byte count) -- cheap, for checks before a model
    loads; :func:`load_adapter` always does it and more."""
    from pluralign.io import read_json

    path = Path(path)
    if not path.is_dir():
        raise PluralignError("adapter folder not found" if not path.exists() else "not an adapter folder (a file)", file=path)
    rec = record_file(path)
    if not rec.is_file():
        raise PluralignError(f"not an adapter folder (no {RECORD} or {CONFIG})", file=path)
    meta = _check_meta(read_json(rec), rec)
    if not (path / WEIGHTS).is_file():
        raise PluralignError(f"adapter weights missing ({WEIGHTS})", file=path)
    if check_weights:
        _check_weights_file(path, meta)
    return meta


def _check_weights_file(path: Path, meta: dict) -> None:
    """The weights file whole: its header against its length, and its length against the record."""
    f = path / WEIGHTS
    why = weights_problem(f)
    if why is None and meta.get("weights") and f.stat().st_size != meta["weights"]["bytes"]:
        why = f"{f.stat().st_size} bytes, the adapter config records {meta['weights']['bytes']}"
    if why:
        raise PluralignError(f"damaged adapter weights: {why}", file=f)


def read_adapter_weights(path, meta: dict | None = None) -> dict[str, torch.Tensor]:
    """The tensors of the adapter folder ``path``: whole (the recorded SHA-256 matches) and finite
    (a NaN or inf is refused naming the tensor); one :class:`PluralignError` otherwise."""
    from safetensors.torch import load_file

    path = Path(path)
    meta = read_adapter_config(path) if meta is None else meta
    f = path / WEIGHTS
    _check_weights_file(path, meta)
    rec = (meta.get("weights") or {}).get("sha256")
    if rec is not None and _sha256(f) != rec:
        raise PluralignError("damaged adapter weights: their SHA-256 differs from the one recorded at saving (corrupted or "
                             f"replaced; to use edited weights on purpose, delete 'weights' from {record_file(path).name})", file=f)
    try:
        state = load_file(str(f))
    except Exception as e:  # safetensors raises its own SafetensorError (and OSError, ValueError) on a damaged file
        msg = " ".join(str(e).split()) or type(e).__name__
        raise PluralignError(f"damaged adapter weights ({msg[:200]})", file=f) from None
    for k, t in state.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            n_nan, n_inf = int(torch.isnan(t).sum()), int(torch.isinf(t).sum())
            raise PluralignError(f"tensor {k} holds {n_nan} NaN and {n_inf} inf values: the adapter cannot be used", file=f, field=k)
    return state


def load_adapter(base_model: nn.Module, path):
    """Rebuild the adapter of ``path`` on ``base_model`` (a fresh backbone, modified in place) and
    load its weights (under peft's tensor names or pluralign's, as the record says). Raises
    :class:`PluralignError` when the checkpoint was made for another backbone or does not match
    its recorded config."""
    from pluralign.adapters import build_adapted_model

    path = Path(path)
    meta = read_adapter_config(path)
    rec = record_file(path)
    want = meta.get("backbone") or {}
    have = backbone_fingerprint(base_model)
    diff = [f"{k}: adapter {want[k]} vs model {have.get(k)}" for k in want
            if k not in ("weights_checksum", "weights_scale") and want[k] is not None and have.get(k) != want[k]]
    if not diff and want.get("weights_checksum") is not None and have.get("weights_checksum") is not None \
            and not _same_checksum(want, have):
        diff = [f"same shape, other weights (embedding checksum {want['weights_checksum']} vs {have['weights_checksum']})"]
    if diff:
        raise PluralignError(
            f"adapter was trained on another backbone ({meta.get('base_model')}): {'; '.join(diff)}",
            file=rec, field="backbone",
        )
    method = meta["method"]
    try:
        cfg = config_from_dict(method, meta["config"])
    except PluralignError as e:
        raise PluralignError(e.message, file=rec, field=f"config.{e.field}" if e.field else "config") from None
    except (TypeError, ValueError) as e:
        raise PluralignError(f"invalid settings ({e})", file=rec, field="config") from None
    state = read_adapter_weights(path, meta)  # before the backbone is modified
    model = build_adapted_model(base_model, method, cfg)
    if meta.get("weights_format") == PEFT_WEIGHTS:
        _load_peft_weights(model, state, path, rec)
    else:
        _load_own_weights(model, state, path)
    model.adapter_meta = meta
    return model


def _mismatch(method: str, missing: list, unexpected: list, path: Path) -> PluralignError:
    what = (f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}")
    return PluralignError(
        f"adapter weights do not match the {method} config ({len(missing)} missing, {len(unexpected)} unexpected; {what})",
        file=path / WEIGHTS,
    )


def _shape_error(k: str, saved, model, path: Path) -> PluralignError:
    return PluralignError(f"tensor {k} has shape {tuple(saved)} in the checkpoint but {tuple(model)} in the model",
                          file=path / WEIGHTS)


def _load_peft_weights(model, state: dict, path: Path, rec: Path) -> None:
    """Weights saved by peft (tensor names without the adapter name), loaded as
    ``PeftModel.from_pretrained`` does, after the same name and shape checks as pluralign's own."""
    from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict

    peft_model = _peft_model(model)
    if peft_model is None:
        raise PluralignError(f"the record says peft weights, but a {model.method} model is not a peft model",
                             file=rec, field="weights_format")
    with torch.no_grad():
        expected = {k: t.shape for k, t in get_peft_model_state_dict(peft_model, save_embedding_layers=False).items()}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise _mismatch(model.method, missing, unexpected, path)
    for k, t in state.items():
        if t.shape != expected[k]:
            raise _shape_error(k, t.shape, expected[k], path)
    set_peft_model_state_dict(peft_model, state)  # its unexpected keys list a prompt encoder's, loaded apart


def _load_own_weights(model, state: dict, path: Path) -> None:
    """Weights saved under pluralign's parameter names (the non-peft methods, and every method in
    a folder saved before format version 2)."""
    params = dict(model.named_parameters())
    expected = adapter_state_dict(model).keys()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in params]
    if missing or unexpected:
        raise _mismatch(model.method, missing, unexpected, path)
    with torch.no_grad():
        for k, t in state.items():
            p = params[k]
            if p.shape != t.shape:
                raise _shape_error(k, t.shape, p.shape, path)
            p.copy_(t.to(p.dtype))


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
            file=record_file(path), field="profile_encoder",
        )
    device, dtype = model.device, model._activation_dtype()

    def profile_kwargs(profiles):
        return {"profile_embeds": encoder.encode(list(profiles)).to(device=device, dtype=dtype)}

    return model, profile_kwargs
