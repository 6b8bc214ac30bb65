"""``helpfield``: a dataclass field with the help text that configs, ``--help`` and docs show."""

from __future__ import annotations

from dataclasses import field
from typing import Any


def helpfield(default: Any, help: str, **kw: Any):
    """``field(default=default, metadata={"help": help})``; a list / dict default is copied per
    instance (``default_factory``)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)
