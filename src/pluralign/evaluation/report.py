"""Results files, summary tables and plots."""

from __future__ import annotations

from pathlib import Path

from pluralign.io import atomic_write_json, read_json

COLUMNS_IND = ["accuracy", "macro_f1", "emd", "jsd", "entropy", "option_mass"]
COLUMNS_DIST = ["emd", "jsd", "accuracy", "entropy", "option_mass"]


def save_results(result: dict, path: str | Path) -> Path:
    """Atomic write: an interrupted run never leaves a truncated or clobbered results file."""
    return atomic_write_json(path, result)


def load_results(path: str | Path) -> dict:
    from pluralign.errors import PluralignError

    r = read_json(path)
    if not isinstance(r, dict) or "metrics" not in r:
        raise PluralignError("not a pluralign results file (no 'metrics')", file=path)
    return r


def _label(r: dict) -> str:
    lab = r.get("method", "?")
    if r.get("adapter"):
        lab = f"{Path(r['adapter']).name}+{lab}"
    if r.get("soft_prompt"):
        lab = f"softprompt+{lab}"
    return lab


def summary_rows(results: list[dict]) -> tuple[list[str], list[list]]:
    """One row per result plus the reference predictors (taken from the first result)."""
    kind = results[0]["dataset"]["kind"] if results else "distributional"
    cols = COLUMNS_IND if kind == "individual" else COLUMNS_DIST
    header = ["method", *cols, "emd sd (groups)", "n"]
    rows = []
    for r in results:
        m = r["metrics"]
        rows.append([_label(r), *[m.get(c, float("nan")) for c in cols], m["emd_by_group"]["std"], m["n"]])
    if results:
        for name, ref in results[0]["references"].items():
            m = ref["metrics"]
            rows.append([f"ref:{name}", *[m.get(c, float("nan")) if c != "option_mass" else "" for c in cols],
                         m.get("emd_by_group", {}).get("std", float("nan")), m["n"]])
    return header, rows


def write_plot(results: list[dict], path: str | Path) -> Path:
    """Per-group EMD of each method and reference (bars), atomically written PNG."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from pluralign.io import atomic_write_bytes

    series = {_label(r): r["per_group"] for r in results}
    if results:
        for name, ref in results[0]["references"].items():
            series[f"ref:{name}"] = ref["per_group"]
    groups = sorted({g for s in series.values() for g in s})
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(groups) * max(1, len(series)) / 2), 4))
    w = 0.8 / max(1, len(series))
    x = np.arange(len(groups))
    for i, (name, pg) in enumerate(series.items()):
        ax.bar(x + i * w, [pg.get(g, {}).get("emd", np.nan) for g in groups], w, label=name)
    ax.set_xticks(x + 0.4 - w / 2)
    ax.set_xticklabels(groups, rotation=45, ha="right")
    ax.set_ylabel("EMD to human answers (lower is better)")
    title = results[0]["model"] + " on " + results[0]["dataset"]["name"] if results else ""
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
