"""Per-cell metric values and seeded bootstrap intervals over groups and items.

Every evaluation is reduced to a table of (group, question) **cells**: for distributional data one
cell per example (the group's human distribution vs the prediction); for individual data one cell
per (group, question), comparing the mean predicted distribution with the group's empirical answers
(as :func:`pluralign.evaluation.runner.compute_metrics` does for ``emd``). Each cell holds the value
of every registered distribution metric (:data:`pluralign.evaluation.metrics.METRICS`) with weight 1,
and the row-level metrics ``accuracy`` and ``entropy`` averaged over the cell's rows with weight =
rows. A metric's estimate is the weighted mean over cells, so it equals the number the runner reports.

Intervals: a *two-way* (pigeonhole) bootstrap. One replicate draws the groups with replacement and,
independently, the questions with replacement; a cell (g, q) enters with multiplicity
``count(g) * count(q)``. The interval is the percentile interval of the replicate means
(``level``, default 95 %). ``unit='groups'`` or ``'items'`` resamples only one of the two,
``'cells'`` resamples cells i.i.d. (Meister et al. 2024 resample per-question values that way).
Draws come from ``numpy.random.default_rng(seed)``: the same seed gives the same interval.

Paired differences: two evaluations of the same rows (two methods, two read-outs, a method and a
reference) are matched on their common cells and every replicate uses the *same* resampled groups
and questions for both, so the interval of ``A - B`` is much narrower than the two marginal
intervals suggest when A and B move together.

Metrics of individual data that are not means over cells (``macro_f1``, ``macro_f1_option_label``,
``macro_f1_per_question``, ``emd_wvb``) get their interval from :func:`row_metric_intervals`: each
replicate recomputes the metric on the resampled rows (the same group x item scheme; the rows of a
drawn cell enter with its multiplicity as sample weight), vectorised over replicates through
weighted confusion counts and answer histograms.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from pluralign.evaluation import metrics as M

#: row-level metrics: averaged over a cell's rows, weighted by rows
ROW_METRICS = ("accuracy", "entropy")
UNITS = ("both", "groups", "items", "cells")
_CHUNK = 4_000_000  # replicate x cell multiplicities computed at once


@dataclass
class CellTable:
    group: list[str]
    item: list[str]
    values: dict[str, np.ndarray]
    weights: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.group)

    @property
    def metrics(self) -> list[str]:
        return list(self.values)

    def weight(self, m: str) -> np.ndarray:
        w = self.weights.get(m)
        w = np.ones(len(self)) if w is None else np.asarray(w, dtype=float)
        return np.where(np.isnan(self.values[m]), 0.0, w)

    def keys(self) -> list[tuple[str, str, int]]:
        """(group, item, occurrence) per cell (occurrence > 0 only for repeated pairs)."""
        seen: dict[tuple[str, str], int] = defaultdict(int)
        out = []
        for g, q in zip(self.group, self.item):
            out.append((g, q, seen[(g, q)]))
            seen[(g, q)] += 1
        return out

    def mean(self, m: str, mask: np.ndarray | None = None) -> float:
        v, w = np.nan_to_num(self.values[m]), self.weight(m)
        if mask is not None:
            w = w * mask
        s = w.sum()
        return float((w * v).sum() / s) if s > 0 else float("nan")

    def select(self, idx: Sequence[int]) -> "CellTable":
        idx = np.asarray(idx, dtype=int)
        return CellTable(
            [self.group[i] for i in idx], [self.item[i] for i in idx],
            {m: v[idx] for m, v in self.values.items()}, {m: np.asarray(w)[idx] for m, w in self.weights.items()},
        )

    # ------------------------------------------------------------------ JSON
    def to_json(self, digits: int = 6) -> dict:
        def r(a):
            return [None if not np.isfinite(x) else round(float(x), digits) for x in a]

        return {
            "group": list(self.group), "item": list(self.item),
            "values": {m: r(v) for m, v in self.values.items()},
            "weights": {m: [float(x) for x in w] for m, w in self.weights.items()},
        }

    @classmethod
    def from_json(cls, d: dict) -> "CellTable":
        vals = {m: np.array([np.nan if x is None else float(x) for x in v], dtype=float) for m, v in d["values"].items()}
        w = {m: np.asarray(v, dtype=float) for m, v in (d.get("weights") or {}).items()}
        return cls(list(d["group"]), list(d["item"]), vals, w)


def cell_table(test, probs: Sequence[np.ndarray | None], metrics: Iterable[str] | None = None) -> CellTable:
    """The cells of ``test`` under predictions ``probs`` (one per example, ``None`` = not scored)."""
    names = list(metrics) if metrics is not None else list(M.METRICS)
    cells: dict[tuple, list[int]] = defaultdict(list)
    order: list[tuple] = []
    for i, (e, p) in enumerate(zip(test.examples, probs)):
        if p is None:
            continue
        key = (e.group, e.item_id) if test.kind == "individual" else (e.group, e.item_id, i)
        if key not in cells:
            order.append(key)
        cells[key].append(i)
    vals: dict[str, list[float]] = {m: [] for m in [*names, *ROW_METRICS]}
    wts: dict[str, list[float]] = {m: [] for m in ROW_METRICS}
    for key in order:
        idx = cells[key]
        item = test.items[key[1]]
        ps = [np.asarray(probs[i], dtype=float) for i in idx]
        pm = np.mean(ps, axis=0)
        if test.kind == "individual":
            answers = [test.examples[i].answer for i in idx]
            h = np.bincount(answers, minlength=item.n_options).astype(float)
            credit = [M.mode_credit(p, a) for p, a in zip(ps, answers)]
        else:
            h = np.asarray(test.examples[idx[0]].probs, dtype=float)
            credit = [M.mode_credit(ps[0], h)]
        for m in names:
            vals[m].append(M.METRICS[m](pm, h, item.ordinal))
        vals["accuracy"].append(float(np.mean(credit)))
        vals["entropy"].append(float(np.mean([M.entropy(p) for p in ps])))
        for m in ROW_METRICS:
            wts[m].append(float(len(idx)))
    return CellTable(
        [k[0] for k in order], [k[1] for k in order],
        {m: np.asarray(v, dtype=float) for m, v in vals.items()},
        {m: np.asarray(v, dtype=float) for m, v in wts.items()},
    )


def group_means(table: CellTable) -> dict[str, dict[str, float]]:
    """Per group: the weighted mean of every metric over the group's cells."""
    g = np.asarray(table.group, dtype=object)
    return {grp: {m: table.mean(m, (g == grp).astype(float)) for m in table.metrics} for grp in dict.fromkeys(table.group)}


# ---------------------------------------------------------------------------------- bootstrap
def _index(labels: Sequence[str]) -> tuple[np.ndarray, int]:
    u = {x: i for i, x in enumerate(dict.fromkeys(labels))}
    return np.array([u[x] for x in labels], dtype=int), len(u)


def _multiplicities(table: CellTable, n_boot: int, rng: np.random.Generator, unit: str):
    """Yields (b, C) arrays of cell multiplicities, chunk by chunk (same rng stream for any table
    with the same groups and items in the same order)."""
    if unit not in UNITS:
        from pluralign.errors import PluralignError

        raise PluralignError(f"unknown bootstrap unit {unit!r} ({' | '.join(UNITS)})", field="bootstrap_unit")
    gi, G = _index(table.group)
    ii, I = _index(table.item)
    C = len(table)
    step = max(1, _CHUNK // max(1, C))
    done = 0
    while done < n_boot:
        b = min(step, n_boot - done)
        if unit == "cells":
            mult = rng.multinomial(C, np.full(C, 1.0 / C), size=b).astype(float)
        else:
            cg = rng.multinomial(G, np.full(G, 1.0 / G), size=b).astype(float) if unit in ("both", "groups") else np.ones((b, G))
            ci = rng.multinomial(I, np.full(I, 1.0 / I), size=b).astype(float) if unit in ("both", "items") else np.ones((b, I))
            mult = cg[:, gi] * ci[:, ii]
        done += b
        yield mult


def _replicates(tables: Sequence[CellTable], metrics: Sequence[str], n_boot: int, seed: int, unit: str) -> list[dict[str, np.ndarray]]:
    """Replicate means of ``metrics`` for each of ``tables`` (all with the same cells in the same
    order), every replicate with the same multiplicities for all tables."""
    rng = np.random.default_rng(seed)
    out: list[dict[str, list]] = [{m: [] for m in metrics} for _ in tables]
    for mult in _multiplicities(tables[0], n_boot, rng, unit):
        for t, acc in zip(tables, out):
            for m in metrics:
                w = t.weight(m)
                num = mult @ (w * np.nan_to_num(t.values[m]))
                den = mult @ w
                with np.errstate(invalid="ignore", divide="ignore"):
                    acc[m].append(np.where(den > 0, num / np.where(den > 0, den, 1), np.nan))
    return [{m: np.concatenate(v) if v else np.zeros(0) for m, v in acc.items()} for acc in out]


def _interval(stats: np.ndarray, level: float, n_cells: int = 2) -> dict:
    s = stats[np.isfinite(stats)]
    if not len(s) or n_cells < 2:  # one cell: resampling cannot say anything
        return {"lo": None, "hi": None, "se": None}
    a = (1 - level) / 2
    lo, hi = np.percentile(s, [100 * a, 100 * (1 - a)])
    return {"lo": float(lo), "hi": float(hi), "se": float(s.std(ddof=1)) if len(s) > 1 else 0.0}


def bootstrap_intervals(
    table: CellTable, metrics: Sequence[str] | None = None, *, n_boot: int = 1000, seed: int = 0,
    level: float = 0.95, unit: str = "both",
) -> dict[str, dict]:
    """``{metric: {"estimate", "lo", "hi", "se"}}``: percentile intervals of the replicate means."""
    names = [m for m in (metrics or table.metrics) if m in table.values]
    if not len(table) or n_boot <= 0:
        return {}
    (reps,) = _replicates([table], names, n_boot, seed, unit)
    n = {m: int((table.weight(m) > 0).sum()) for m in names}
    return {m: {"estimate": table.mean(m), **_interval(reps[m], level, n[m])} for m in names}


def align(a: CellTable, b: CellTable) -> tuple[CellTable, CellTable]:
    """``a`` and ``b`` restricted to their common cells, in the same order."""
    kb = {k: i for i, k in enumerate(b.keys())}
    ia, ib = [], []
    for i, k in enumerate(a.keys()):
        if k in kb:
            ia.append(i)
            ib.append(kb[k])
    return a.select(ia), b.select(ib)


def paired_difference(
    a: CellTable, b: CellTable, metrics: Sequence[str] | None = None, *, n_boot: int = 1000, seed: int = 0,
    level: float = 0.95, unit: str = "both",
) -> dict[str, dict]:
    """``{metric: {"diff", "lo", "hi", "se", "p", "n_cells"}}`` for ``A - B`` on the cells both
    scored; ``p`` is the two-sided bootstrap p-value (twice the smaller share of replicates on one
    side of 0)."""
    a2, b2 = align(a, b)
    names = [m for m in (metrics or a.metrics) if m in a2.values and m in b2.values]
    if not len(a2) or n_boot <= 0:
        return {}
    ra, rb = _replicates([a2, b2], names, n_boot, seed, unit)
    out = {}
    for m in names:
        d = ra[m] - rb[m]
        fin = d[np.isfinite(d)]
        p = float(min(1.0, 2 * min((fin <= 0).mean(), (fin >= 0).mean()))) if len(fin) else None
        nc = int(((a2.weight(m) > 0) & (b2.weight(m) > 0)).sum())
        out[m] = {"diff": a2.mean(m) - b2.mean(m), **_interval(d, level, nc), "p": p if nc >= 2 else None, "n_cells": len(a2)}
    return out


# ---------------------------------------------------------------------------------- non-cell metrics
ROW_LEVEL = ("macro_f1", "macro_f1_option_label", "macro_f1_per_question", "emd_wvb")


def _row_metrics(W: np.ndarray, pred: np.ndarray, gold: np.ndarray, q: np.ndarray, n_opt: np.ndarray, Q: int, K: int) -> dict:
    """The ROW_LEVEL metrics for each row of sample weights ``W`` (b x rows), from weighted
    confusion counts per (question, option) class (as sklearn's ``f1_score(average="macro")`` with
    ``sample_weight``; a class is present when it is predicted or true in a row of weight > 0)."""
    b = W.shape[0]
    P = np.zeros((len(pred), Q * K))
    P[np.arange(len(pred)), q * K + pred] = 1.0
    G = np.zeros((len(pred), Q * K))
    G[np.arange(len(pred)), q * K + gold] = 1.0
    tp = (W @ (P * G)).reshape(b, Q, K)
    ps, gs = (W @ P).reshape(b, Q, K), (W @ G).reshape(b, Q, K)
    den = ps + gs
    present = den > 1e-12
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(present, 2 * tp / np.where(present, den, 1), np.nan)
        q_present = present.any(-1)
        per_q = np.where(q_present, np.nansum(np.nan_to_num(f1), -1) / np.maximum(present.sum(-1), 1), np.nan)
        out = {"macro_f1_per_question": np.nanmean(per_q, -1),
               "macro_f1": np.nansum(np.nan_to_num(f1), (-1, -2)) / np.maximum(present.sum((-1, -2)), 1)}
        # pooled over questions, classes = option index
        tpk, psk, gsk = tp.sum(1), ps.sum(1), gs.sum(1)
        pk = (psk + gsk) > 1e-12
        out["macro_f1_option_label"] = np.where(pk, 2 * tpk / np.where(pk, psk + gsk, 1), 0).sum(-1) / np.maximum(pk.sum(-1), 1)
        # WorldValuesBench W1 per question between predicted and true answer histograms on [0, 1]
        hp = ps / np.maximum(ps.sum(-1, keepdims=True), 1e-12)
        hg = gs / np.maximum(gs.sum(-1, keepdims=True), 1e-12)
        cdf = np.abs(np.cumsum(hp - hg, -1))[..., :-1].sum(-1) / np.maximum(n_opt - 1, 1)[None, :]
        out["emd_wvb"] = np.nanmean(np.where(q_present, cdf, np.nan), -1)
    return out


def row_metric_intervals(test, probs, *, n_boot: int = 1000, seed: int = 0, level: float = 0.95, unit: str = "both") -> dict:
    """``{metric: {"estimate", "lo", "hi", "se"}}`` of the ROW_LEVEL metrics of individual data
    (``{}`` for group data). Tied predictions are split into weighted rows as the runner does."""
    if getattr(test, "kind", None) != "individual" or n_boot <= 0:
        return {}
    rows = [(e, p) for e, p in zip(test.examples, probs) if p is not None]
    if not rows:
        return {}
    t_pred, t_w, t_gold, t_q, t_g = M.expand_ties([p for _, p in rows], [e.answer for e, _ in rows],
                                                  [e.item_id for e, _ in rows], [e.group for e, _ in rows])
    qi, Q = _index(t_q)
    qnames = sorted(set(t_q))
    n_opt = np.array([test.items[x].n_options for x in qnames])
    K = int(n_opt.max())
    cells = sorted(set(zip(t_g, t_q)))
    cidx = {c: i for i, c in enumerate(cells)}
    row_cell = np.array([cidx[c] for c in zip(t_g, t_q)])
    table = CellTable(group=[c[0] for c in cells], item=[c[1] for c in cells], values={})
    pred, gold, w = np.asarray(t_pred), np.asarray(t_gold), np.asarray(t_w, dtype=float)
    est = {m: float(v[0]) for m, v in _row_metrics(w[None, :], pred, gold, qi, n_opt, Q, K).items()}
    rng = np.random.default_rng(seed)
    reps: dict[str, list] = {m: [] for m in ROW_LEVEL}
    for mult in _multiplicities(table, n_boot, rng, unit):
        for m, v in _row_metrics(mult[:, row_cell] * w[None, :], pred, gold, qi, n_opt, Q, K).items():
            reps[m].append(v)
    return {m: {"estimate": est[m], **_interval(np.concatenate(reps[m]), level, len(cells))} for m in ROW_LEVEL}


# ---------------------------------------------------------------------------------- runner hook
def add_benchmark(test, probs, overall: dict, per_group: dict, *, n_boot: int = 1000, seed: int = 0,
                  level: float = 0.95, unit: str = "both") -> tuple[dict, dict]:
    """Add every registered metric not yet in ``overall`` / ``per_group`` (means over cells) and
    return ``(intervals, cells)`` for the results JSON."""
    table = cell_table(test, probs)
    overall.setdefault("emd_by_group", M.mean_std([]))  # also when nothing was scored (an unparseable read-out)
    if not len(table):
        return {}, table.to_json()
    for m in M.METRICS:
        overall.setdefault(m, table.mean(m))
    for g, vals in group_means(table).items():
        row = per_group.setdefault(g, {})
        for m in M.METRICS:
            row.setdefault(m, vals[m])
    ivs = bootstrap_intervals(table, n_boot=n_boot, seed=seed, level=level, unit=unit)
    ivs.update(row_metric_intervals(test, probs, n_boot=n_boot, seed=seed, level=level, unit=unit))
    info = {"level": level, "n_boot": n_boot, "seed": seed, "unit": unit, "n_cells": len(table),
            "n_groups": len(set(table.group)), "n_items": len(set(table.item)), "metrics": ivs}
    return (info if ivs else {}), table.to_json()
