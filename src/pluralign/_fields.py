"""``helpfield``: a dataclass field with the help text that configs, ``--help`` and docs show, and
the settings many configs and commands share (model, device, dtype, ...), declared once here.

A field's metadata may also say what the CLI builds from it (:mod:`pluralign.cli._common`):
``choices`` (the accepted values), ``lo`` / ``hi`` with ``open_lo`` / ``open_hi`` (a number's
range), ``flag`` (a flag name other than ``--field-name``; a ``--x/--no-x`` pair or a lone ``--x``
for a switch), ``cli`` (False: a config-file or API setting with no flag) and ``cli_default`` (the
flag's default where the field's default is computed later, e.g. None = "scaled to the run").
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
