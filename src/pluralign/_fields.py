"""``helpfield``: a dataclass field with the help text that configs, ``--help`` and docs show, and
the settings many configs and commands share (model, device, dtype, ...), declared once here.

A field's metadata may also say what the CLI builds from it (:mod:`pluralign.cli._common`):
``choices`` (the accepted values; a function returning them, or ``"module:attr"`` naming a
registry), ``lo`` / ``hi`` with ``open_lo`` / ``open_hi`` (a number's range), ``check`` (a rule
beyond type and range: device, adapter, cache_dir, out_dir, de_variant), ``flag`` (a flag name
other than ``--field-name``; a ``--x/--no-x`` pair or a lone ``--x`` for a switch), ``cli``
(False: a config-file or API setting with no flag), ``cli_default`` (the flag's default where it
differs from the field's, e.g. None = "scaled to the run"), ``path`` (the flag takes a path),
``repeat`` (a list given by repeating the flag), ``item`` (float: a list of numbers) and ``csv``
(a comma-separated string of ``choices``).
A field with ``prefix`` holds a nested settings block whose fields are flags ``--<prefix><name>``.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any


def helpfield(default: Any, help: str, **meta: Any):
    """``field(default=default, metadata={"help": help, **meta})``; a list / dict default is copied
    per instance (``default_factory``). ``meta``: see the module docstring."""
    md = {"help": help, **meta}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=md)
    return field(default=default, metadata=md)


def restate(cls, name: str, default: Any, **meta: Any):
    """Field ``name`` of dataclass ``cls`` (a base class) with another default (and ``meta``
    added), for a subclass that changes only the default: its help and rules stay declared once."""
    import dataclasses

    f = {g.name: g for g in dataclasses.fields(cls)}[name]
    return helpfield(default, **{**f.metadata, **meta})


# --------------------------------------------------------------------------- shared settings
#: every dtype name the model loader accepts
DTYPES = ("auto", "fp32", "float32", "bf16", "bfloat16", "fp16", "float16")
DEFAULT_MODEL = "smollm2-135m"

#: the help text of each shared setting, the same in every config and command
SHARED_HELP = {
    "model": "Backbone: short name (smollm2-135m), hub id, local folder or .gguf file.",
    "device": "auto, cpu, cuda, cuda:1, ...",
    "dtype": "auto (bf16 on CUDA, fp32 on CPU), fp32, bf16, fp16 (also float32, bfloat16, float16).",
    "batch_size": "Rows per forward pass.",
    "chat_template": "Use the model's chat template.",
    "threads": "CPU threads for torch (0 = torch's default).",
    "progress": "Show a progress bar.",
}


def shared_field(name: str, default: Any = None, help: str | None = None, **meta: Any):
    """The dataclass field of a shared setting (``model``, ``device``, ``dtype``, ``batch_size``,
    ``chat_template``, ``threads``, ``progress``): its one help text (``help``: more specific
    wording where a config gives the setting a narrower meaning, e.g. what a batch row is) and rules."""
    defaults = {"model": DEFAULT_MODEL, "device": "auto", "dtype": "auto", "chat_template": True, "threads": 0, "progress": True}
    rules = {"dtype": {"choices": DTYPES}, "batch_size": {"lo": 1}, "threads": {"lo": 0},
             "chat_template": {"flag": "--chat-template/--no-chat-template"}}
    return helpfield(defaults.get(name) if default is None else default, help or SHARED_HELP[name], **{**rules.get(name, {}), **meta})


# --------------------------------------------------------------------------- flat view of a config
class Setting:
    """One setting of a config dataclass as a flag / config-file key sees it: ``name`` is flat
    (``grpo_beta`` for the ``beta`` of the ``grpo`` block, whose field has ``metadata["prefix"]``
    "grpo_"; a field's ``metadata["flag"]`` may name it otherwise), ``path`` the attribute path."""

    def __init__(self, name: str, path: tuple[str, ...], f, type_: Any):
        self.name, self.path, self.field, self.type = name, path, f, type_
        self.meta = dict(f.metadata)

    @property
    def help(self) -> str:
        return self.meta.get("help", "")

    @property
    def default(self) -> Any:
        from dataclasses import MISSING

        return self.field.default_factory() if self.field.default is MISSING else self.field.default

    @property
    def base(self) -> Any:
        """The type without ``| None`` (``list[str]`` -> ``list``)."""
        import typing

        args = [t for t in typing.get_args(self.type) if t is not type(None)]
        tp = args[0] if args and typing.get_origin(self.type) not in (list, tuple, dict) else self.type
        return typing.get_origin(tp) or tp

    @property
    def optional(self) -> bool:
        """None is a value of the setting (its type says ``| None``, or its flag's default is None)."""
        import typing

        return type(None) in typing.get_args(self.type) or self.meta.get("cli_default", 0) is None

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"Setting({self.name!r}, path={self.path!r})"


def _flag_name(meta: dict, default: str) -> str:
    flag = meta.get("flag")
    return flag.split("/")[0].lstrip("-").replace("-", "_") if flag else default


def _hints(cls) -> dict[str, Any]:
    """The resolved field types of ``cls``; a type named only for type checkers (a heavy module's
    class, e.g. ``LoRASettings``) is ``Any`` rather than an error."""
    import sys
    import typing

    try:
        return typing.get_type_hints(cls)
    except NameError:
        out: dict[str, Any] = {}
        for klass in reversed(cls.__mro__):
            ns = vars(sys.modules[klass.__module__])
            for k, v in getattr(klass, "__annotations__", {}).items():
                try:
                    out[k] = eval(v, ns) if isinstance(v, str) else v  # noqa: S307 - a class's own annotation
                except NameError:
                    out[k] = Any
        return out


def settings(cls) -> list[Setting]:
    """Every setting of dataclass ``cls`` in declaration order, the fields of a nested settings
    block (a field with ``metadata["prefix"]``) in its place, named with the prefix."""
    import dataclasses

    hints = _hints(cls)
    out: list[Setting] = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        prefix = f.metadata.get("prefix")
        if prefix is not None:
            for s in settings(hints[f.name]):
                name = _flag_name(s.meta, prefix + s.name) if len(s.path) == 1 else s.name
                out.append(Setting(name, (f.name, *s.path), s.field, s.type))
        else:
            out.append(Setting(_flag_name(f.metadata, f.name), (f.name,), f, hints[f.name]))
    return out


def flatten(cls, d: dict) -> dict:
    """A config as a dict (``asdict``, or a JSON record) with each nested block's fields as flat keys
    (``{"grpo": {"beta": 0.1}}`` -> ``{"grpo_beta": 0.1}``); flat keys already there are kept, as are
    keys ``cls`` does not know (for the caller to refuse)."""
    out = {k: v for k, v in d.items()}
    for s in settings(cls):
        if len(s.path) > 1:
            block = d.get(s.path[0])
            if isinstance(block, dict) and s.path[1] in block:
                out[s.name] = block[s.path[1]]
    for s in settings(cls):
        if len(s.path) > 1 and isinstance(d.get(s.path[0]), dict):
            out.pop(s.path[0], None)
    return out


def unflatten(cls, flat: dict) -> dict:
    """The inverse of :func:`flatten`: constructor arguments of ``cls`` (each nested block a dict of
    its fields; a nested block given whole, as a dict, is merged under its flat keys)."""
    by_name = {s.name: s for s in settings(cls)}
    out: dict = {}
    for k, v in flatten(cls, flat).items():
        s = by_name.get(k)
        if s is None or len(s.path) == 1:
            out[k] = v
        else:
            out.setdefault(s.path[0], {})[s.path[1]] = v
    return out


# --------------------------------------------------------------------------- checks for the Python API
def _choices_of(meta: dict) -> tuple | None:
    c = meta.get("choices")
    if c is None:
        return None
    if isinstance(c, str):  # "module:attr", a registry
        import importlib

        mod, attr = c.split(":")
        return tuple(sorted(getattr(importlib.import_module(mod), attr)))
    return tuple(c() if callable(c) else c)


def range_error(name: str, meta: dict, v: Any) -> str | None:
    """What is wrong with value ``v`` of setting ``name`` by its metadata's ``choices`` and
    ``lo`` / ``hi`` / ``open_lo`` / ``open_hi`` (the rules the CLI checks flags against), or None."""
    import math

    choices = _choices_of(meta)
    if choices is not None and isinstance(v, str) and not meta.get("csv"):
        return None if v in choices else f"unknown {name} {v!r} ({' | '.join(map(str, choices))})"
    if isinstance(v, bool) or not isinstance(v, (int, float)) or ("lo" not in meta and "hi" not in meta):
        return None
    if isinstance(v, float) and not math.isfinite(v):
        return f"{name} must be a finite number, got {v}"
    lo, hi, open_lo, open_hi = meta.get("lo"), meta.get("hi"), meta.get("open_lo", False), meta.get("open_hi", False)
    lo_bad = lo is not None and (v <= lo if open_lo else v < lo)
    hi_bad = hi is not None and (v >= hi if open_hi else v > hi)
    if not (lo_bad or hi_bad):
        return None
    if hi is None:
        return f"{name} must be {'>' if open_lo else '>='} {lo}, got {v}"
    if lo is None:
        return f"{name} must be {'<' if open_hi else '<='} {hi}, got {v}"
    return f"{name} must be in {'(' if open_lo else '['}{lo}, {hi}{')' if open_hi else ']'}, got {v}"


def check_settings(obj) -> None:
    """Check each setting of dataclass instance ``obj`` (its own fields; a nested block is checked
    by its own ``validate``) against its metadata (:func:`range_error`); raise one
    :class:`pluralign.errors.PluralignError` naming the field. None (an unset optional) passes."""
    from pluralign.errors import PluralignError

    for s in settings(type(obj)):
        if len(s.path) > 1:
            continue
        name = s.path[0]
        v = getattr(obj, name)
        msg = None if v is None else range_error(name, s.meta, v)
        if msg:
            raise PluralignError(msg, field=name)
