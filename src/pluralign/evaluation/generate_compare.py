"""Tables with intervals from several ``pluralign generate-eval`` reports (``pluralign compare``).

Each report holds one row per evaluated record (profile, unit = question / conversation, the
adapter's and the base model's answers, their BLEnD match, the judge's verdicts). The rows become a
:class:`~pluralign.evaluation.bootstrap.CellTable` with group = profile and item = unit, so the
intervals are the same two-way (profiles x questions) bootstrap as for survey results:

* ``match``: BLEnD answer match (1 when the answer contains one of the region's human answers);
* ``match_weighted``: the matched answer's annotator count over the top answer's (reports written
  before it was recorded per row lack it);
* ``win``: the judge's verdict on adapter vs base, averaged over the two orders (win 1, tie 0.5,
  loss 0; identical answers are a tie in both orders; off-format orders are left out), weighted by
  the judged orders, so its mean is the report's win rate.

The base model's answers are the same in every report of one split (greedy decoding); its row is
taken from the first report and a warning says when the reports disagree on it. So is the
model-free reference row, when the reports carry it (``ref_other_groups``: the other regions' most
frequent human answer to the question, what a mean-collapsed model would say; see
:func:`pluralign.evaluation.generate.add_references`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from pluralign.errors import PluralignError
from pluralign.evaluation.bootstrap import CellTable, bootstrap_intervals, paired_difference

METRICS = ("match", "match_weighted", "win")


def is_generation_report(r) -> bool:
    return isinstance(r, dict) and isinstance(r.get("outputs"), list) and isinstance(r.get("diversity"), dict)


def load_generation_report(path, doc: dict | None = None) -> dict:
    """A ``generate-eval`` report (read from ``path``, or ``doc`` when already read from it), or one
    clear error naming the file and field."""
    from pluralign.io import read_json

    r = read_json(path, allow_nan=True) if doc is None else doc
    if not is_generation_report(r):
        raise PluralignError("not a `pluralign generate-eval` report (no 'outputs' / 'diversity')", file=path)
    for i, row in enumerate(r["outputs"], start=1):
        if not isinstance(row, dict) or "profile" not in row or "unit" not in row:
            raise PluralignError("output row without profile / unit", file=path, row=i, field="outputs")
    return r


def _win(v, margin: float) -> tuple[float, float]:
    """(score, judged orders) of one record's verdicts."""
    if v == "identical":
        return 0.5, 2.0
    if not isinstance(v, (list, tuple)):
        return float("nan"), 0.0
    s = [1.0 if p > 0.5 + margin else 0.0 if p < 0.5 - margin else 0.5 for p in v if p is not None]
    return (float(np.mean(s)), float(len(s))) if s else (float("nan"), 0.0)


def generation_cells(rep: dict, who: str = "adapter") -> CellTable:
    """The cells of one report for ``who`` (adapter, base, or ref_other_groups: the model-free
    reference); ``win`` only for the adapter."""
    rows = rep["outputs"]
    margin = float((rep.get("config") or {}).get("tie_margin") or 0.0)
    key = who if who.startswith("ref_") else f"{who}_match"
    vals: dict[str, list[float]] = {m: [] for m in METRICS}
    wts: list[float] = []
    for row in rows:
        m = row.get(key)
        vals["match"].append(float("nan") if m is None else float(m))
        mw = row.get(f"{key}_weighted")
        vals["match_weighted"].append(float("nan") if mw is None else float(mw))
        s, w = _win(row.get("judge"), margin) if who == "adapter" else (float("nan"), 0.0)
        vals["win"].append(s)
        wts.append(w)
    values = {m: np.asarray(v, dtype=float) for m, v in vals.items() if not np.all(np.isnan(np.asarray(v, dtype=float)))}
    weights = {"win": np.asarray(wts)} if "win" in values else {}
    return CellTable([str(r["profile"]) for r in rows], [str(r["unit"]) for r in rows], values, weights)


def run_label(path: Path, rep: dict) -> str:
    a = rep.get("adapter")
    if a:
        a = Path(a)
        return a.parent.name if a.name == "adapter" else a.name
    return Path(path).stem


def _fmt(e: dict | None, digits: int = 3) -> str:
    if not e or e.get("estimate") is None or not np.isfinite(e["estimate"]):
        return "–"
    s = f"{e['estimate']:.{digits}f}"
    if e.get("lo") is not None:
        s += f" [{e['lo']:.{digits}f}, {e['hi']:.{digits}f}]"
    return s


def _fmt_diff(d: dict | None, digits: int = 3) -> str:
    if not d:
        return "–"
    s = f"{d['diff']:+.{digits}f}"
    if d.get("lo") is not None:
        s += f" [{d['lo']:+.{digits}f}, {d['hi']:+.{digits}f}]"
        if d["lo"] > 0 or d["hi"] < 0:
            s += " *"
    return s


def _diversity(d: dict) -> list[str]:
    """Distinct-2 and entropy cells of one ``diversity`` entry (adapter or base)."""
    return ["–" if d.get("distinct2") is None else f"{d['distinct2']:.3f}",
            "–" if d.get("entropy_bits") is None else f"{d['entropy_bits']:.2f}"]


def compare_generation(reps: Sequence[dict], labels: Sequence[str], *, n_boot: int = 1000, seed: int = 0,
                       unit: str = "both") -> tuple[list[str], list[list], list[str], list[list], list[str]]:
    """``(header, rows, diff_header, diff_rows, warnings)`` of loaded reports
    (:func:`load_generation_report`): one row per report plus the base model and the reference;
    paired differences of every report minus the reference, minus the base model and minus the
    first report."""
    warnings = []
    keys = [sorted((str(o["profile"]), str(o["unit"]), o.get("prompt", "")) for o in r["outputs"]) for r in reps]
    if any(k != keys[0] for k in keys[1:]):
        warnings.append("the reports do not score the same records (different splits or --max-records): differences use the common ones")
    base0 = [o.get("base") for o in reps[0]["outputs"]]
    if any(sorted(map(str, (o.get("base") for o in r["outputs"]))) != sorted(map(str, base0)) for r in reps[1:] if len(r["outputs"]) == len(base0)):
        warnings.append("the base model's answers differ between reports (sampling, other settings): the base row is the first report's")
    tables = [generation_cells(r) for r in reps]
    base = generation_cells(reps[0], "base")
    header = ["run", "BLEnD match", "weighted match", "win rate vs base", "Distinct-2", "entropy (bits)", "judged orders", "off-format", "records"]
    rows = []
    for lab, r, t in zip(labels, reps, tables):
        iv = bootstrap_intervals(t, n_boot=n_boot, seed=seed, unit=unit)
        d = r["diversity"]["adapter"]
        w = r.get("win_rate") or {}
        rows.append([lab, _fmt(iv.get("match")), _fmt(iv.get("match_weighted")), _fmt(iv.get("win")), *_diversity(d),
                     w.get("judged_orders", "–"), w.get("off_format", "–"), r["records"]])
    ib = bootstrap_intervals(base, n_boot=n_boot, seed=seed, unit=unit)
    rows.append(["base model (no adapter)", _fmt(ib.get("match")), _fmt(ib.get("match_weighted")), "0.500 (itself)",
                 *_diversity(reps[0]["diversity"]["base"]), "–", "–", reps[0]["records"]])
    ref = generation_cells(reps[0], "ref_other_groups")
    if "match" in ref.values:
        ir = bootstrap_intervals(ref, n_boot=n_boot, seed=seed, unit=unit)
        rows.append(["ref: other regions' top human answer (mean collapse)", _fmt(ir.get("match")), _fmt(ir.get("match_weighted")),
                     "–", "–", "–", "–", "–", int(np.isfinite(ref.values["match"]).sum())])
    dheader = ["difference", "BLEnD match", "weighted match", "win rate vs base", "cells"]
    drows = []
    if "match" in ref.values:
        for lab, t in zip(labels, tables):
            d = paired_difference(t, ref, ["match", "match_weighted"], n_boot=n_boot, seed=seed, unit=unit)
            drows.append([f"{lab} − ref: other regions", _fmt_diff(d.get("match")), _fmt_diff(d.get("match_weighted")), "–",
                          next(iter(d.values()))["n_cells"] if d else 0])
    for lab, t in zip(labels, tables):
        d = paired_difference(t, base, [m for m in ("match", "match_weighted") if m in t.values], n_boot=n_boot, seed=seed, unit=unit)
        drows.append([f"{lab} − base", _fmt_diff(d.get("match")), _fmt_diff(d.get("match_weighted")), "–",
                      next(iter(d.values()))["n_cells"] if d else 0])
    for lab, t in list(zip(labels, tables))[1:]:
        d = paired_difference(t, tables[0], n_boot=n_boot, seed=seed, unit=unit)
        drows.append([f"{lab} − {labels[0]}", _fmt_diff(d.get("match")), _fmt_diff(d.get("match_weighted")), _fmt_diff(d.get("win")),
                      next(iter(d.values()))["n_cells"] if d else 0])
    return header, rows, dheader, drows, warnings


def judge_agreement_rows(reps: Sequence[dict], labels: Sequence[str]) -> tuple[list[str], list[list]]:
    """How often the judge agreed with the human-answer metric, per loaded report (records where the
    adapter's and base model's BLEnD match differ)."""
    header = ["run", "judge", "decisive records", "agree", "disagree", "judge tie", "agreement", "judge position bias (A)", "order consistency"]
    rows = []
    for lab, r in zip(labels, reps):
        h = r.get("judge_human_agreement") or {}
        w = r.get("win_rate") or {}

        def f(x):
            return "–" if x is None else f"{x:.3f}"

        rows.append([lab, w.get("judge", "–"), h.get("decisive", "–"), h.get("agree", "–"), h.get("disagree", "–"), h.get("judge_tie", "–"),
                     f(h.get("agreement")), f(w.get("position_bias_A")), f(w.get("order_consistency"))])
    return header, rows


__all__ = ["METRICS", "is_generation_report", "load_generation_report", "generation_cells", "compare_generation", "judge_agreement_rows"]
