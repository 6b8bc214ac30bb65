"""Where things live: the shared data folder, the cache, the shipped resources."""

from __future__ import annotations

import os
from pathlib import Path

RESOURCES = Path(__file__).resolve().parent / "data" / "resources"


def cache_dir() -> Path:
    """``$PLURALIGN_CACHE`` or ``~/.cache/pluralign``: converted models, profile embeddings."""
    root = os.environ.get("PLURALIGN_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "pluralign"
    )
    p = Path(root)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # under a regular file, read-only, ...
        from pluralign.errors import PluralignError

        why = "it or a folder above it is a file" if isinstance(e, (FileExistsError, NotADirectoryError)) else (e.strerror or str(e))
        raise PluralignError(f"cannot use this cache folder ({why}); set PLURALIGN_CACHE to a writable folder", file=p) from None
    return p


def shared_data_dir() -> Path | None:
    """The development data folder: ``$PLURALIGN_DATA``, else ``../shared/data`` seen from the
    current directory or from the repository root. ``None`` when absent (a fresh user machine); a
    ``$PLURALIGN_DATA`` that names no folder is an error, never a silent fallback."""
    env = os.environ.get("PLURALIGN_DATA")
    if env and not Path(env).is_dir():  # a mistyped variable never falls back to another folder silently
        from pluralign.errors import PluralignError

        raise PluralignError("PLURALIGN_DATA names no folder; fix it or unset it", file=env, field="PLURALIGN_DATA")
    candidates = [Path(env)] if env else []
    repo_root = Path(__file__).resolve().parents[2]
    candidates += [Path.cwd().parent / "shared" / "data", repo_root.parent / "shared" / "data"]
    for c in candidates:
        if c.is_dir():
            return c
    return None
