"""Helpers shared by the CLI modules: logging set-up, table printing, thread count."""

from __future__ import annotations

import logging
import os
import warnings


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
