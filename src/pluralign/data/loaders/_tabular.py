"""Shared helpers for delimited files: read with pandas, check required columns, clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from pluralign.errors import PluralignError


def read_table(path: Path, required: Sequence[str], *, sep: str | None = None) -> pd.DataFrame:
    """Read CSV/TSV as strings; a missing file or column is a one-line error naming it. Text is
    UTF-8 (a byte-order mark, also UTF-16's, is honoured); other encodings and binary files are
    refused with the offset of the first bad byte (see :func:`pluralign.io.decode_text`)."""
    import io

    from pluralign.io import read_text

    path = Path(path)
    if not path.is_file():
        raise PluralignError("file not found" if not path.exists() else "is a folder, not a file", file=path)
    if sep is None:
        sep = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    text = read_text(path)
    if not text.strip():
        raise PluralignError("empty file", file=path)
    try:
        df = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False, na_values=[])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError, OverflowError, MemoryError) as e:
        msg = " ".join(str(e).split())[:200]
        raise PluralignError(f"cannot parse as {'TSV' if sep == chr(9) else 'CSV'}: {msg}", file=path) from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise PluralignError(
            f"missing column(s) {', '.join(missing)} (found: {', '.join(map(str, df.columns[:20]))})",
            file=path,
            field=missing[0],
        )
    if df.empty:
        raise PluralignError("no data rows", file=path)
    return df
