"""Helpers shared by the CLI modules: logging set-up, table printing, and the options several commands take."""

from __future__ import annotations

import logging
import os
import warnings
from typing import Any

import typer

from pluralign._fields import DEFAULT_MODEL, SHARED_HELP


def quiet_libraries() -> None:
    """Keep transformers / datasets chatter off the user's terminal (errors still show)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1") if os.environ.get("PLURALIGN_OFFLINE", "1") == "1" else None
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    for name in ("transformers", "accelerate", "peft", "sentence_transformers", "torch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as tlog

        tlog.set_verbosity_error()
        tlog.disable_progress_bar()
    except Exception:  # pragma: no cover
        pass


def markdown_table(header: list[str], rows: list[list]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.3f}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------- shared options
# The options several commands take, declared once (help texts: pluralign._fields.SHARED_HELP).
# Each returns a typer.Option to use as a parameter default, e.g. ``dtype: str = Dtype()``.
def Model(default: Any = DEFAULT_MODEL, help: str = SHARED_HELP["model"]) -> Any:
    """``--model``; ``help`` only where the default means something else (e.g. the adapter's base model)."""
    return typer.Option(default, help=help)


def Device() -> Any:
    return typer.Option("auto", help=SHARED_HELP["device"])


def Dtype() -> Any:
    return typer.Option("auto", help=SHARED_HELP["dtype"])


def BatchSize(default: int, help: str = SHARED_HELP["batch_size"]) -> Any:
    """``--batch-size``; ``help`` says what a batch counts where it is not rows of a forward pass."""
    return typer.Option(default, help=help)


def ChatTemplate(default: Any = True, help: str = SHARED_HELP["chat_template"]) -> Any:
    return typer.Option(default, "--chat-template/--no-chat-template", help=help)


def Threads(default: int = 0) -> Any:
    return typer.Option(default, help=SHARED_HELP["threads"])


def Progress() -> Any:
    return typer.Option(True, help=SHARED_HELP["progress"])
