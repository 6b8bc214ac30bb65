"""Results files, summary tables (values with bootstrap intervals, paired differences) and plots."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

from pluralign.io import atomic_write_json, read_json

#: the benchmarks' own metrics (issue 12), shown beside ours in every table
COLUMNS_BENCH = ["opinionqa_rep", "goqa_sim", "tv", "wvb_w1"]
COLUMNS_IND = ["accuracy", "nll", "macro_f1", "emd", "jsd", *COLUMNS_BENCH, "entropy", "option_mass"]
COLUMNS_DIST = ["emd", "jsd", "accuracy", *COLUMNS_BENCH, "entropy", "option_mass"]
#: metrics compared in the paired-difference table (means over cells, so they have paired intervals)
COLUMNS_DIFF = ["emd", "jsd", "accuracy", *COLUMNS_BENCH]


def fmt_ci(value, lo=None, hi=None, digits: int = 3) -> str:
    """``0.172 [0.165, 0.180]`` (just the value without an interval; ``nan`` for no value)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "nan"
    if lo is None or hi is None:
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _cell(metrics: dict, intervals: dict | None, col: str, with_ci: bool):
    v = metrics.get(col, float("nan"))
    v = float("nan") if v is None else v  # null in JSON: undefined
    iv = ((intervals or {}).get("metrics") or {}).get(col) if with_ci else None
    if iv and iv.get("lo") is not None and isinstance(v, (int, float)):
        return fmt_ci(v, iv["lo"], iv["hi"])
    return v


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
    return lab + readout_suffix(r)


def readout_suffix(r: dict) -> str:
    """`` (verbalized)`` / `` (sampled)`` for results of a generating read-out, else empty."""
    ro = (r.get("readout") or {}).get("name") or (r.get("config") or {}).get("readout") or "logprob"
    return "" if ro == "logprob" else f" ({ro})"


def summary_rows(results: list[dict], intervals: bool = True) -> tuple[list[str], list[list]]:
    """One row per result plus the reference predictors (taken from the first result; one that
    scored no row, such as ``train_mean`` on unseen questions, is left out). With
    ``intervals``, a metric with a bootstrap interval in the results is the string
    ``0.172 [0.165, 0.180]``; a ``coverage`` column appears when some result did not score every
    example (an unparseable verbalized answer)."""
    kind = results[0]["dataset"]["kind"] if results else "distributional"
    cols = list(COLUMNS_IND if kind == "individual" else COLUMNS_DIST)
    if any(r["metrics"].get("coverage", 1.0) < 1.0 for r in results):
        cols.append("coverage")
    header = ["method", *cols, "emd sd (groups)", "n"]
    rows = []
    for r in results:
        m = r["metrics"]
        rows.append([_label(r), *[_cell(m, r.get("intervals"), c, intervals) for c in cols], _sd(m), m["n"]])
    if results:
        for name, ref in results[0]["references"].items():
            m = ref["metrics"]
            if not m.get("n"):  # a reference with nothing to say here (train_mean on questions no training row answered)
                continue
            rows.append([f"ref:{name}", *[_cell(m, ref.get("intervals"), c, intervals) if c != "option_mass" else "" for c in cols],
                         _sd(m), m["n"]])
    return header, rows


def _sd(m: dict) -> float:
    v = (m.get("emd_by_group") or {}).get("std")
    return float("nan") if v is None else v


def _cells_of(r: dict):
    from pluralign.evaluation.bootstrap import CellTable

    return CellTable.from_json(r["cells"]) if r.get("cells") else None


def difference_rows(
    results: list[dict], labels: list[str] | None = None, *, baseline: int = 0, references: Sequence[str] = ("train_mean",),
    n_boot: int | None = None, seed: int | None = None, unit: str | None = None, level: float | None = None,
) -> tuple[list[str], list[list], list[str]]:
    """Paired bootstrap differences ``A - B`` on the cells both scored: every result against the
    ``baseline`` result, and every result against the named ``references`` of the first result
    (default ``train_mean``, the mean-collapse predictor). ``diff [lo, hi]``, a ``*`` when the
    interval excludes 0. Settings default to those recorded in the first result's ``intervals``.
    Returns ``(header, rows, warnings)``."""
    from pluralign.evaluation.bootstrap import paired_difference

    warnings: list[str] = []
    labels = labels or [_label(r) for r in results]
    if not results:
        return [], [], warnings
    rec = results[0].get("intervals") or {}
    kw = dict(n_boot=n_boot if n_boot is not None else rec.get("n_boot", 1000), seed=seed if seed is not None else rec.get("seed", 0),
              unit=unit or rec.get("unit", "both"), level=level or rec.get("level", 0.95))
    if kw["n_boot"] <= 0:
        return [], [], ["bootstrap disabled (0 replicates): no paired differences"]
    tables = [_cells_of(r) for r in results]
    missing = [lab for lab, t in zip(labels, tables) if t is None]
    if missing:
        warnings.append(f"no per-cell values (results from before issue 12?) for {', '.join(missing)}: no paired differences for them")
    pairs = []
    if tables[baseline] is not None:
        pairs += [(labels[i], labels[baseline], tables[i], tables[baseline]) for i in range(len(results)) if i != baseline and tables[i] is not None]
    for name, ref in (results[0].get("references") or {}).items():
        if name in references:
            rt = _cells_of(ref)
            if rt is None:
                continue
            pairs += [(labels[i], f"ref:{name}", tables[i], rt) for i in range(len(results)) if tables[i] is not None]
    header = ["difference (A - B)", *COLUMNS_DIFF, "cells"]
    rows = []
    for la, lb, ta, tb in pairs:
        d = paired_difference(ta, tb, COLUMNS_DIFF, **kw)
        if not d:
            warnings.append(f"{la} and {lb} share no scored cell")
            continue
        row = [f"{la} - {lb}"]
        for c in COLUMNS_DIFF:
            x = d.get(c)
            if not x or x["lo"] is None:  # no cell, or one cell: no interval
                row.append(fmt_ci(x["diff"]) if x else "nan")
                continue
            star = "*" if (x["lo"] > 0 or x["hi"] < 0) else ""
            row.append(fmt_ci(x["diff"], x["lo"], x["hi"]) + star)
        row.append(next(iter(d.values()))["n_cells"])
        rows.append(row)
    return header, rows, warnings


def difference_note(results: list[dict]) -> str:
    """One line saying how the paired intervals were computed."""
    rec = (results[0].get("intervals") if results else None) or {}
    return (f"paired bootstrap over {rec.get('unit', 'both')} (groups x questions when 'both'), {rec.get('n_boot', 1000)} replicates, "
            f"seed {rec.get('seed', 0)}, {100 * rec.get('level', 0.95):.0f} % percentile intervals; * = the interval excludes 0")


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


def readout_agreement(results: list[dict], ordinal: dict | None = None) -> list[dict]:
    """For each method and cell scored with both the logprob and the sampled read-out: the mean EMD
    between the two predicted distributions over the rows both answered, and the logprob
    read-out's option mass (how much of the next-token distribution is on the labels)."""
    import numpy as np

    from pluralign.evaluation import metrics as M

    out = []
    by = {}
    for r in results:
        by[(r.get("method"), r.get("cell"), (r.get("readout") or {}).get("name", "logprob"))] = r
    for (m, cell, ro), r in by.items():
        s = by.get((m, cell, "sampled"))
        if ro != "logprob" or s is None or not r.get("predictions") or not s.get("predictions"):
            continue
        vals = [M.emd(np.asarray(a["probs"]), np.asarray(b["probs"]), (ordinal or {}).get(a["item_id"], True))
                for a, b in zip(r["predictions"], s["predictions"]) if a["probs"] is not None and b["probs"] is not None]
        if vals:
            out.append({"method": m, "cell": cell, "emd": float(np.mean(vals)), "n": len(vals),
                        "option_mass": float(r["metrics"].get("option_mass", float("nan")))})
    return out
