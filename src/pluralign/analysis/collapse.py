"""Mean collapse: does a model keep the differences between groups, or answer every group alike?

From the per-(group, question) predictions of an evaluation (``predictions`` of
``eval-*.json``; for individual data the mean prediction of the group's respondents against their
empirical answers, as the ``emd`` metric does):

* **entropy** — per group, the mean entropy (nats) of the predicted distributions beside that of the
  human ones; a model that hedges everywhere has higher entropy than the people it imitates;
* **spread across groups** — per question, how different the groups' distributions are: the mean
  pairwise Jensen–Shannon distance (base 2) between the groups, and for ordinal questions the
  variance across groups of the expected answer (position / (K − 1), so in [0, 1]); the same for
  the human distributions;
* **diversity kept** — predicted spread / human spread (means over the questions answered by at
  least two groups): 1 = the groups differ as much as the people do, 0 = every group gets the same
  answer (total collapse, what the ``train_mean`` reference does by construction).

Several results (dense methods and mixtures) are analysed side by side; the references of the
eval summary (``uniform``, ``train_mean``, ``culture_map_knn``) are recomputed from the first
result's split when its data can be loaded.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from pluralign.errors import PluralignError
from pluralign.evaluation import metrics as M

SCHEMA = "pluralign.analysis.collapse/1"


@dataclass
class Cells:
    """Predicted and human distributions per (group, question) cell."""

    pred: dict[tuple[str, str], np.ndarray]
    human: dict[tuple[str, str], np.ndarray]
    kind: str = "distributional"

    @property
    def groups(self) -> list[str]:
        return sorted({g for g, _ in self.pred})

    @property
    def items(self) -> list[str]:
        return sorted({q for _, q in self.pred}, key=_natural)


def _natural(s: str):
    import re

    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def cells_of_result(r: dict, *, file=None) -> Cells:
    """The cells of a results dict (``pluralign.eval/1``) from its ``predictions``."""
    preds = r.get("predictions")
    if not isinstance(preds, list) or not preds:
        raise PluralignError("results file without per-example predictions (evaluated with keep_predictions off?)",
                             file=file, field="predictions")
    kind = r["dataset"]["kind"]
    if kind == "distributional":
        pred, human = {}, {}
        for i, row in enumerate(preds, start=1):
            if row.get("probs") is None:
                continue
            try:
                k = (str(row["group"]), str(row["item_id"]))
                p, h = np.asarray(row["probs"], dtype=float), np.asarray(row["human"], dtype=float)
            except (KeyError, TypeError, ValueError) as e:
                raise PluralignError(f"malformed prediction row ({e})", file=file, row=i, field="predictions") from None
            if p.shape != h.shape or p.sum() <= 0 or h.sum() <= 0:
                raise PluralignError("prediction and human distribution differ in size or are empty", file=file, row=i, field="predictions")
            pred[k], human[k] = p / p.sum(), h / h.sum()
        return Cells(pred, human, kind)
    acc: dict[tuple[str, str], list[np.ndarray]] = defaultdict(list)
    ans: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, row in enumerate(preds, start=1):
        if row.get("probs") is None:
            continue
        try:
            k = (str(row["group"]), str(row["item_id"]))
            acc[k].append(np.asarray(row["probs"], dtype=float))
            ans[k].append(int(row["answer"]))
        except (KeyError, TypeError, ValueError) as e:
            raise PluralignError(f"malformed prediction row ({e})", file=file, row=i, field="predictions") from None
    pred, human = {}, {}
    for k, ps in acc.items():
        pm = np.mean(ps, axis=0)
        pred[k] = pm / pm.sum()
        h = np.bincount(ans[k], minlength=len(pm)).astype(float)
        human[k] = h / h.sum()
    return Cells(pred, human, kind)


# --------------------------------------------------------------------------------- statistics
def expected_position(p: np.ndarray) -> float:
    """Expected answer on [0, 1]: sum_i p_i * i / (K - 1)."""
    k = len(p)
    return float(np.dot(p, np.arange(k)) / (k - 1))


def mean_pairwise_jsd(dists: Sequence[np.ndarray]) -> float:
    pairs = list(itertools.combinations(range(len(dists)), 2))
    return float(np.mean([M.jsd(dists[i], dists[j]) for i, j in pairs])) if pairs else float("nan")


def _ratio(a: float, b: float) -> float | None:
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)) or b <= 0:
        return None
    return float(a / b)


def collapse_stats(cells: Cells, ordinal: dict[str, bool] | None = None) -> dict:
    """Entropy, spread and diversity kept of ``cells`` (see the module docstring). ``ordinal``:
    question id -> ordinal flag (the expected-answer variance uses ordinal questions only; unknown
    questions count as ordinal)."""
    ordinal = ordinal or {}
    by_group: dict[str, list[tuple[str, str]]] = defaultdict(list)
    by_item: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for k in cells.pred:
        by_group[k[0]].append(k)
        by_item[k[1]].append(k)
    ent = lambda p: M.entropy(p, normalised=False)  # noqa: E731
    per_group = {}
    for g in sorted(by_group):
        ks = by_group[g]
        pe = float(np.mean([ent(cells.pred[k]) for k in ks]))
        he = float(np.mean([ent(cells.human[k]) for k in ks]))
        pn = float(np.mean([M.entropy(cells.pred[k]) for k in ks]))
        hn = float(np.mean([M.entropy(cells.human[k]) for k in ks]))
        per_group[g] = {"n_items": len(ks), "pred_entropy_nats": pe, "human_entropy_nats": he, "pred_entropy": pn,
                        "human_entropy": hn, "entropy_ratio": _ratio(pe, he)}
    per_item = {}
    for q in sorted(by_item, key=_natural):
        ks = sorted(by_item[q])
        if len(ks) < 2:
            continue
        p = [cells.pred[k] for k in ks]
        h = [cells.human[k] for k in ks]
        row = {"n_groups": len(ks), "ordinal": bool(ordinal.get(q, True)),
               "pred_jsd": mean_pairwise_jsd(p), "human_jsd": mean_pairwise_jsd(h)}
        row["jsd_ratio"] = _ratio(row["pred_jsd"], row["human_jsd"])
        if row["ordinal"]:
            row["pred_var"] = float(np.var([expected_position(x) for x in p]))
            row["human_var"] = float(np.var([expected_position(x) for x in h]))
            row["var_ratio"] = _ratio(row["pred_var"], row["human_var"])
        per_item[q] = row
    allk = list(cells.pred)
    overall = {
        "n_cells": len(allk), "n_groups": len(by_group), "n_items": len(by_item), "n_items_spread": len(per_item),
        "pred_entropy_nats": float(np.mean([ent(cells.pred[k]) for k in allk])) if allk else None,
        "human_entropy_nats": float(np.mean([ent(cells.human[k]) for k in allk])) if allk else None,
    }
    overall["entropy_ratio"] = _ratio(overall["pred_entropy_nats"], overall["human_entropy_nats"])
    if per_item:
        overall["pred_spread_jsd"] = float(np.mean([r["pred_jsd"] for r in per_item.values()]))
        overall["human_spread_jsd"] = float(np.mean([r["human_jsd"] for r in per_item.values()]))
        overall["diversity_jsd"] = _ratio(overall["pred_spread_jsd"], overall["human_spread_jsd"])
        ords = [r for r in per_item.values() if r["ordinal"]]
        if ords:
            overall["pred_spread_var"] = float(np.mean([r["pred_var"] for r in ords]))
            overall["human_spread_var"] = float(np.mean([r["human_var"] for r in ords]))
            overall["diversity_var"] = _ratio(overall["pred_spread_var"], overall["human_spread_var"])
    overall["diversity"] = overall.get("diversity_jsd")
    return {"overall": overall, "per_group": per_group, "per_item": per_item}


# --------------------------------------------------------------------------------- data side
def item_ordinality(r: dict) -> tuple[dict[str, bool] | None, str | None]:
    """Question id -> ordinal flag from the result's dataset (None and a note when it cannot be
    loaded: every question then counts as ordinal)."""
    from pluralign.data import load_dataset

    spec = (r.get("split") or {}).get("data") or (r.get("dataset") or {}).get("source")
    if not spec:
        return None, "the result names no dataset: every question treated as ordinal"
    try:
        ds = load_dataset(spec)
    except PluralignError as e:
        return None, f"dataset {spec} not loadable ({e.message}): every question treated as ordinal"
    return {q: it.ordinal for q, it in ds.items.items()}, None


def reference_cells(r: dict, cells: Cells) -> tuple[dict[str, Cells], str | None]:
    """The eval summary's references (uniform, train_mean, culture_map_knn) on ``cells``,
    recomputed from the result's split record; ``({}, note)`` when the split cannot be rebuilt or
    does not reproduce the result's human distributions."""
    from pluralign.analysis.runs import rebuild_split
    from pluralign.evaluation.runner import reference_predictions

    rec = dict(r.get("split") or {})
    if not rec.get("data") or not rec.get("by"):
        return {}, "no split record in the result: references not recomputed"
    if rec.get("reference_data"):
        return {}, "the result's references came from --reference-data: not recomputed"
    try:
        _, sp = rebuild_split(rec)
    except PluralignError as e:
        return {}, f"split not rebuilt ({e}): references not recomputed"
    keys = set(cells.pred)
    test = sp.test.subset([e for e in sp.test.examples if (e.group, e.item_id) in keys])
    human = test.human_distributions()
    if set(human) != keys or any(np.abs(human[k] - cells.human[k]).max() > 1e-3 for k in keys):
        return {}, "the rebuilt split does not reproduce the result's human answers: references not recomputed"
    out = {}
    for name, ps in reference_predictions(test, sp.train, map_k=int((r.get("config") or {}).get("map_k", 3))).items():
        acc: dict[tuple[str, str], list[np.ndarray]] = defaultdict(list)
        for e, p in zip(test.examples, ps):
            if p is not None:
                acc[(e.group, e.item_id)].append(np.asarray(p, dtype=float))
        pred = {k: np.mean(v, axis=0) / np.mean(v, axis=0).sum() for k, v in acc.items()}
        out[f"ref:{name}"] = Cells(pred, {k: cells.human[k] for k in pred}, cells.kind)  # the result's own (rounded) human answers
    return out, None


def analyze_collapse(series: Sequence[tuple[str, dict]], *, references: bool = True, files: Sequence | None = None) -> dict:
    """The collapse analysis of labelled results ``[(label, result), ...]`` (plus the first result's
    references). Returns a JSON-able dict (schema ``pluralign.analysis.collapse/1``)."""
    if not series:
        raise PluralignError("no results to analyse")
    files = list(files) if files is not None else [None] * len(series)
    notes: list[str] = []
    out_series = []
    cells_all: dict[str, Cells] = {}
    ordinal, note = item_ordinality(series[0][1])
    if note:
        notes.append(note)
    for (label, r), f in zip(series, files):
        c = cells_of_result(r, file=f)
        cells_all[label] = c
        out_series.append({"label": label, "source": str(f) if f else None, "kind": c.kind, "method": r.get("method"),
                           "adapter": r.get("adapter"), **collapse_stats(c, ordinal)})
    if references:
        refs, note = reference_cells(series[0][1], cells_all[series[0][0]])
        if note:
            notes.append(note)
        for label, c in refs.items():
            cells_all[label] = c
            out_series.append({"label": label, "source": str(files[0]) if files[0] else None, "kind": c.kind, "method": None,
                               "adapter": None, "reference": True, **collapse_stats(c, ordinal)})
    cell_sets = {lab: set(c.pred) for lab, c in cells_all.items() if not lab.startswith("ref:")}
    if len({frozenset(s) for s in cell_sets.values()}) > 1:
        notes.append("the results do not cover the same (group, question) cells: compare with care")
    return {"schema": SCHEMA, "series": out_series, "notes": notes, "_cells": cells_all}


COLUMNS = [
    ("pred_entropy_nats", "entropy (nats)"), ("human_entropy_nats", "human entropy"), ("entropy_ratio", "entropy ratio"),
    ("pred_spread_jsd", "spread JSD"), ("human_spread_jsd", "human spread JSD"), ("diversity_jsd", "diversity kept (JSD)"),
    ("pred_spread_var", "var E[answer]"), ("human_spread_var", "human var E[answer]"), ("diversity_var", "diversity kept (var)"),
]


def collapse_table(analysis: dict) -> tuple[list[str], list[list]]:
    header = ["series", *[c for _, c in COLUMNS], "groups", "items"]
    rows = []
    for s in analysis["series"]:
        o = s["overall"]
        rows.append([s["label"], *[_num(o.get(k)) for k, _ in COLUMNS], o["n_groups"], o["n_items"]])
    return header, rows


def _num(v):
    return float("nan") if v is None else v


# --------------------------------------------------------------------------------- plots
def choose_items(analysis: dict, n: int = 3) -> list[str]:
    """The ``n`` questions on which the groups' human answers differ most (first series)."""
    per_item = analysis["series"][0]["per_item"]
    return [q for q, _ in sorted(per_item.items(), key=lambda kv: -kv[1]["human_jsd"])[:n]]


def choose_groups(analysis: dict, items: Sequence[str], n: int = 4) -> list[str]:
    """Up to ``n`` groups: those with the lowest and highest human expected answer on the first item."""
    c: Cells = analysis["_cells"][analysis["series"][0]["label"]]
    groups = c.groups
    if len(groups) <= n or not items:
        return groups[:n]
    q = items[0]
    have = sorted((expected_position(c.human[(g, q)]), g) for g in groups if (g, q) in c.human)
    pick = [g for _, g in have[: n // 2]] + [g for _, g in have[-(n - n // 2):]]
    return sorted(dict.fromkeys(pick))


def plot_distributions(analysis: dict, path: Path, *, items: Sequence[str] | None = None, groups: Sequence[str] | None = None,
                       with_references: bool = False) -> Path:
    """Predicted vs human distributions of the chosen questions (rows) and groups (columns)."""
    from pluralign._plot import PALETTE, pyplot, save_png

    plt = pyplot()
    items = list(items or choose_items(analysis))
    groups = list(groups or choose_groups(analysis, items))
    if not items or not groups:
        raise PluralignError("no question answered by two groups: nothing to plot", field="items")
    series = [s["label"] for s in analysis["series"] if with_references or not s.get("reference")]
    cells = analysis["_cells"]
    first = cells[analysis["series"][0]["label"]]
    fig, axes = plt.subplots(len(items), len(groups), figsize=(3.1 * len(groups), 2.3 * len(items) + 0.6), squeeze=False)
    w = 0.8 / (len(series) + 1)
    for i, q in enumerate(items):
        for j, g in enumerate(groups):
            ax = axes[i][j]
            h = first.human.get((g, q))
            if h is None:
                ax.set_axis_off()
                continue
            x = np.arange(len(h))
            ax.bar(x - 0.4 + w / 2, h, w, color="#444444", label="human")
            for s_i, lab in enumerate(series):
                p = cells[lab].pred.get((g, q))
                if p is not None:
                    ax.bar(x - 0.4 + w * (s_i + 1.5), p, w, color=PALETTE[s_i % len(PALETTE)], label=lab)
            ax.set_xticks(x)
            ax.set_xticklabels([str(k + 1) for k in x], fontsize=7)
            ax.tick_params(axis="y", labelsize=7)
            ax.set_ylim(0, 1)
            ax.set_title(f"{q} · {g}", fontsize=8)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=min(5, len(labels)), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / (2.3 * len(items) + 0.6)))
    return save_png(fig, path)


def plot_diversity(analysis: dict, path: Path) -> Path:
    """Diversity kept (JSD and expected-answer variance) per series, 1 = no collapse."""
    from pluralign._plot import pyplot, save_png

    plt = pyplot()
    ss = analysis["series"]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(ss) + 1.4))
    y = np.arange(len(ss))
    dj = [_num(s["overall"].get("diversity_jsd")) for s in ss]
    dv = [_num(s["overall"].get("diversity_var")) for s in ss]
    ax.barh(y - 0.2, dj, 0.4, color="#1f77b4", label="pairwise JSD")
    ax.barh(y + 0.2, dv, 0.4, color="#ff7f0e", label="variance of the expected answer")
    ax.axvline(1.0, color="k", lw=0.8, ls="--")
    ax.set_yticks(y)
    ax.set_yticklabels([s["label"] for s in ss], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("diversity kept = predicted spread across groups / human spread (1 = none lost)")
    ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False)
    fig.tight_layout()
    return save_png(fig, path)


def plot_entropy(analysis: dict, path: Path) -> Path:
    """Per group: mean predicted vs human entropy (nats), one marker per series; the diagonal is
    'as uncertain as the people'."""
    from pluralign._plot import PALETTE, pyplot, save_png

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    lo, hi = np.inf, -np.inf
    for i, s in enumerate(analysis["series"]):
        pg = s["per_group"]
        x = [v["human_entropy_nats"] for v in pg.values()]
        y = [v["pred_entropy_nats"] for v in pg.values()]
        if not x:
            continue
        lo, hi = min(lo, *x, *y), max(hi, *x, *y)
        ax.scatter(x, y, s=22, color=PALETTE[i % len(PALETTE)], label=s["label"], alpha=0.85,
                   marker="x" if s.get("reference") else "o")
    if math.isfinite(lo):
        pad = 0.05 * (hi - lo + 1e-9)
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "k--", lw=0.8)
    ax.set_xlabel("human entropy per group (nats)")
    ax.set_ylabel("predicted entropy per group (nats)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_png(fig, path)


def write_collapse(analysis: dict, out: Path, *, items=None, groups=None, prefix: str = "collapse") -> dict:
    """``collapse.json`` and the three plots into ``out``; returns name -> path."""
    from pluralign.io import atomic_write_json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "diversity": plot_diversity(analysis, out / f"{prefix}-diversity.png"),
        "entropy": plot_entropy(analysis, out / f"{prefix}-entropy.png"),
    }
    try:
        paths["distributions"] = plot_distributions(analysis, out / f"{prefix}-distributions.png", items=items, groups=groups)
    except PluralignError as e:
        analysis["notes"].append(str(e))
    data = {k: v for k, v in analysis.items() if not k.startswith("_")}
    data["plots"] = {k: p.name for k, p in paths.items()}
    paths["json"] = atomic_write_json(out / f"{prefix}.json", data)
    return paths


__all__ = ["Cells", "cells_of_result", "collapse_stats", "analyze_collapse", "collapse_table", "write_collapse",
           "plot_distributions", "plot_diversity", "plot_entropy", "expected_position", "mean_pairwise_jsd", "SCHEMA"]
