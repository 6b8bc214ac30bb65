"""Matplotlib (Agg) helpers shared by the analyses and the soft-prompt search: figures are written atomically as PNG."""

from __future__ import annotations

import io
from pathlib import Path

#: colours of series (runs, references) in every plot, in order
PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"]


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: str | Path, dpi: int = 90) -> Path:
    from pluralign.io import atomic_write_bytes

    plt = pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
