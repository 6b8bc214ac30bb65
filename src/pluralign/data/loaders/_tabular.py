"""Shared helpers for delimited files: read with pandas, check required columns, clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from pluralign.errors import PluralignError


def read_table(path: Path, required: Sequence[str], *, sep: str | None = None) -> pd.DataFrame:
    """Read CSV/TSV as strings; a missing file or column is a one-line error naming it."""
    path = Path(path)
    if not path.is_file():
        raise PluralignError("file not found", file=path)
    if sep is None:
        sep = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    try:
        df = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_values=[])
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as e:
        raise PluralignError(f"cannot parse as {'TSV' if sep == chr(9) else 'CSV'}: {e}", file=path) from None
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
