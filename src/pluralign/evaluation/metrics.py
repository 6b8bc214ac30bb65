"""Metrics for survey answers: accuracy, negative log-likelihood, macro-F1, Earth Mover's distance,
Jensen-Shannon, entropy, and the survey-alignment benchmarks' own: OpinionQA representativeness
(``opinionqa_rep``), GlobalOpinionQA similarity (``goqa_sim``), total variation (``tv``, Meister et
al. 2024), Meister et al.'s Jensen-Shannon divergence (``js_divergence``) and WorldValuesBench's W1
(``wvb_w1``).

Jensen-Shannon, two names for two quantities: ``jsd`` is the Jensen-Shannon *distance* (the square
root of the divergence) in base 2, in [0, 1]; ``js_divergence`` is the *divergence* (no square root)
in nats, in [0, ln 2], as Meister et al.'s code computes what their paper calls "JSD".

Registry: ``METRICS`` maps a name to a function of (predicted, human) distributions so adding a
distribution metric is one decorated function.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable, Sequence

import numpy as np
from scipy.spatial.distance import jensenshannon
from sklearn.metrics import f1_score

from pluralign.registry import Registry

DistMetric = Callable[[np.ndarray, np.ndarray, bool], float]
METRICS: Registry[DistMetric] = Registry("metric", field="metric")
#: per metric: ``higher_is_better`` and a one-line ``description`` (reports, docs)
METRIC_INFO: dict[str, dict] = {}


def register_metric(name: str, *, higher_is_better: bool = False, description: str = "") -> Callable[[DistMetric], DistMetric]:
    """Register ``fn(pred, human, ordinal) -> float`` under ``name``. Every registered metric is
    computed per (group, question) cell for every evaluation (``pluralign.evaluation.bootstrap``),
    averaged over cells and given a bootstrap interval. Returning ``nan`` leaves a cell out (e.g.
    an ordinal-scale metric on a nominal item)."""

    def deco(fn: DistMetric) -> DistMetric:
        METRICS.add(name, fn)
        METRIC_INFO[name] = {"higher_is_better": higher_is_better, "description": description or (fn.__doc__ or "").split("\n")[0]}
        return fn

    return deco


def _check(p: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both as float distributions summing to 1; subnormal entries (below ~2.2e-308) become 0, as
    halving them in the Jensen-Shannon mixture would underflow to 0 and give an infinite divergence."""
    p = np.asarray(p, dtype=float)
    q = np.asarray(q, dtype=float)
    if p.shape != q.shape or p.ndim != 1:
        raise ValueError(f"distributions differ in shape: {p.shape} vs {q.shape}")
    tiny = np.finfo(float).tiny
    p, q = np.where(p < tiny, 0.0, p), np.where(q < tiny, 0.0, q)
    return p / p.sum(), q / q.sum()


@register_metric("emd", description="Earth Mover's distance on the ordinal scale / (K-1); total variation for nominal items")
def emd(p: np.ndarray, q: np.ndarray, ordinal: bool = True) -> float:
    """Earth Mover's distance on the ordinal scale 0..K-1, divided by K-1 so it lies in [0, 1]
    (= scipy's 1-D Wasserstein distance / (K-1)). For nominal items the ground distance is 0/1 and
    EMD equals the total-variation distance."""
    p, q = _check(p, q)
    if not ordinal:
        return float(0.5 * np.abs(p - q).sum())
    k = len(p)
    return float(np.abs(np.cumsum(p - q)[:-1]).sum() / (k - 1))


@register_metric("jsd", description="Jensen-Shannon distance (square root of the divergence), base 2, in [0, 1]")
def jsd(p: np.ndarray, q: np.ndarray, ordinal: bool = True) -> float:
    """Jensen-Shannon *distance*: the square root of the Jensen-Shannon divergence computed with
    base-2 logarithms (``scipy.spatial.distance.jensenshannon(p, q, base=2)``), in [0, 1]: 0 for
    equal distributions, 1 for disjoint ones. Not the divergence: see :func:`js_divergence`."""
    p, q = _check(p, q)
    return float(jensenshannon(p, q, base=2))


@register_metric("js_divergence", description="Jensen-Shannon divergence, natural log, in [0, ln 2] (Meister et al. 2024's \"JSD\")")
def js_divergence(p: np.ndarray, q: np.ndarray, ordinal: bool = True) -> float:
    """Jensen-Shannon *divergence* in nats, ``0.5 KL(p || m) + 0.5 KL(q || m)`` with ``m = (p + q) / 2``,
    in [0, ln 2]: what Meister et al. (2024) report as "JSD" (nicolemeister/benchmarking-distributional-alignment
    ``utils.py``: ``calc_jsd = distance.jensenshannon(p, q) ** 2``, scipy's default natural log).
    Equals ``jsd(p, q) ** 2 * ln 2``."""
    p, q = _check(p, q)
    return float(jensenshannon(p, q) ** 2)


# ----------------------------------------------------------------------------------------------
# The survey-alignment benchmarks' own metrics (issue 12), each as its paper's code computes it on
# one (group, question) pair; option positions are 0..K-1 in the item's option order.
def _w1_positions(p: np.ndarray, q: np.ndarray) -> float:
    """1-D Wasserstein distance between two distributions over the positions 0..K-1."""
    return float(np.abs(np.cumsum(p - q)[:-1]).sum())


@register_metric("opinionqa_rep", higher_is_better=True,
                 description="OpinionQA representativeness 1 - W1/(K-1) on the ordinal scale (nominal items left out)")
def opinionqa_rep(p: np.ndarray, q: np.ndarray, ordinal: bool = True) -> float:
    """OpinionQA representativeness (Santurkar et al. 2023), ``1 - W1(D_M, D_H) / max W1``.

    tatsu-lab/opinions_qa ``process_results.ipynb``: ``wasserstein_distance(ordinal, ordinal, D_M,
    D_H) / get_max_wd(ordinal)`` with ``get_max_wd`` (``helpers.py``) the distance between point
    masses at the smallest and the largest ordinal value, i.e. ``K - 1`` on the positions 0..K-1;
    ``representativeness.ipynb`` averages ``WD`` and reports ``1 - WD``. Items without an order
    (OpinionQA's ``max_wd == 0``) are skipped there; here they give ``nan`` (left out)."""
    if not ordinal:
        return float("nan")
    p, q = _check(p, q)
    return 1.0 - _w1_positions(p, q) / (len(p) - 1)


@register_metric("goqa_sim", higher_is_better=True,
                 description="GlobalOpinionQA similarity 1 - Jensen-Shannon distance (base 2), in [0, 1]")
def goqa_sim(p: np.ndarray, q: np.ndarray, ordinal: bool = True) -> float:
    """GlobalOpinionQA similarity (Durmus et al. 2023), ``1 - JSD(P_country, P_model)`` with JSD the
    Jensen-Shannon *distance* in base 2, so the similarity lies in [0, 1]: 1 for equal
    distributions, 0 for disjoint ones (``= 1 - jsd``). Before issue 29 it used scipy's default
    natural log, which gave disjoint distributions 1 - sqrt(ln 2) = 0.167."""
    p, q = _check(p, q)
    return float(1.0 - jensenshannon(p, q, base=2))


@register_metric("tv", description="total variation distance 0.5 * sum |p - q| (Meister et al. 2024)")
def tv(p: np.ndarray, q: np.ndarray, ordinal: bool = True) -> float:
    """Total variation distance ``0.5 * sum |p - q|`` (nicolemeister/benchmarking-distributional-alignment
    ``utils.py``: ``calc_total_variation``), for ordinal and nominal items alike."""
    p, q = _check(p, q)
    return float(0.5 * np.abs(p - q).sum())


@register_metric("wvb_w1", description="WorldValuesBench W1 on answer positions scaled to [0, 1] (nominal items left out)")
def wvb_w1(p: np.ndarray, q: np.ndarray, ordinal: bool = True) -> float:
    """WorldValuesBench's Wasserstein-1 distance (Zhao et al. 2024): answers are normalised to [0, 1]
    (``get_normalized_scores``: (score - min) / (max - min)) and compared with scipy's
    ``wasserstein_distance`` (Demon702/WorldValuesBench ``evaluation/evaluate.py``). On two answer
    distributions this is W1 over the positions k / (K-1). Nominal items give ``nan``."""
    if not ordinal:
        return float("nan")
    p, q = _check(p, q)
    return _w1_positions(p, q) / (len(p) - 1)


def entropy(p: np.ndarray, normalised: bool = True) -> float:
    """Shannon entropy in nats (natural log); ``normalised`` divides by ln K so it lies in [0, 1]
    (the same as base-K entropy)."""
    p = np.asarray(p, dtype=float)
    p = p / p.sum()
    nz = p[p > 0]
    h = float(-(nz * np.log(nz)).sum())
    return h / np.log(len(p)) if normalised else h


def accuracy(pred: Sequence[int], gold: Sequence[int]) -> float:
    pred, gold = np.asarray(pred), np.asarray(gold)
    return float((pred == gold).mean()) if len(gold) else float("nan")


TIE_TOL = 1e-9  # probabilities within this of the maximum are tied modes


def modes(p: np.ndarray, tol: float = TIE_TOL) -> np.ndarray:
    """Indices of the maxima of ``p`` (every option within ``tol`` of the maximum), ascending."""
    p = np.asarray(p, dtype=float)
    return np.flatnonzero(p >= p.max() - tol)


def mode_credit(pred: np.ndarray, human: np.ndarray | int, tol: float = TIE_TOL) -> float:
    """Tie-aware mode agreement: ``|pred_modes ∩ human_modes| / |pred_modes|``.

    ``human`` is a distribution (its tied maxima are all majority options) or one answer index.
    A prediction with one mode scores 1 when that mode is among the human modes; a prediction with
    m tied maxima scores the fraction of them that are human modes (the expected hit of breaking
    the tie at random), never silently the lowest option as ``np.argmax`` would."""
    pm = modes(pred, tol)
    hm = np.array([int(human)]) if np.ndim(human) == 0 else modes(human, tol)
    return float(np.isin(pm, hm).sum() / len(pm))


def expand_ties(preds: Sequence[np.ndarray], *cols: Sequence, tol: float = TIE_TOL):
    """Hard labels with tie splitting: a row whose prediction has m tied maxima becomes m rows, one
    per tied option, each of weight 1/m (``cols`` are repeated alongside). Returns
    ``(pred, weight, *cols)``; without ties it is plain argmax with unit weights."""
    out_p: list[int] = []
    out_w: list[float] = []
    out_c: list[list] = [[] for _ in cols]
    for i, p in enumerate(preds):
        m = modes(p, tol)
        for j in m:
            out_p.append(int(j))
            out_w.append(1.0 / len(m))
            for c, col in zip(out_c, cols):
                c.append(col[i])
    return (out_p, out_w, *out_c)


def nll(p: np.ndarray, answer: int, floor: float = 1e-12) -> float:
    """Negative log-likelihood (natural log) of one respondent's actual ``answer`` under the
    predicted distribution ``p`` (normalised to sum 1), the probability clipped below at ``floor``
    so a zero gives ``-ln(1e-12) = 27.6`` instead of infinity."""
    p = np.asarray(p, dtype=float)
    tot = p.sum()
    q = float(p[int(answer)]) / tot if tot > 0 else 0.0
    return -float(np.log(max(q, floor)))


def macro_f1_option_label(pred: Sequence[int], gold: Sequence[int], sample_weight: Sequence[float] | None = None) -> float:
    """Macro-F1 with the option *number* as the class, all rows of all questions pooled (sklearn
    ``f1_score(gold, pred, average="macro")``; labels = option indices present in gold or pred).
    Option 0 of one question and option 0 of another are one class here, whatever they say."""
    if not len(gold):
        return float("nan")
    return float(f1_score(list(gold), list(pred), average="macro", zero_division=0, sample_weight=sample_weight))




def macro_f1_per_question(pred: Sequence[int], gold: Sequence[int], question: Sequence[str],
                          sample_weight: Sequence[float] | None = None) -> float:
    """Macro-F1 within each question (over the labels present in gold or pred), then averaged."""
    by_q: dict[str, list[int]] = defaultdict(list)
    for i, q in enumerate(question):
        by_q[q].append(i)
    pred, gold = np.asarray(pred), np.asarray(gold)
    w = None if sample_weight is None else np.asarray(sample_weight, dtype=float)
    scores = [f1_score(gold[ix], pred[ix], average="macro", zero_division=0, sample_weight=None if w is None else w[ix])
              for ix in by_q.values()]
    return float(np.mean(scores)) if scores else float("nan")


def macro_f1_question_option(pred: Sequence[int], gold: Sequence[int], question: Sequence[str],
                             sample_weight: Sequence[float] | None = None) -> float:
    """Macro-F1 with the (question, option) pair as the class, all rows pooled: sklearn
    ``f1_score(average="macro")`` over labels ``"{question}:{option}"``, so "Very important" of one
    question and "Agree strongly" of another are different classes (the results key ``macro_f1``)."""
    g = [f"{q}:{a}" for q, a in zip(question, gold)]
    p = [f"{q}:{a}" for q, a in zip(question, pred)]
    return float(f1_score(g, p, average="macro", zero_division=0, sample_weight=sample_weight)) if g else float("nan")


def emd_samples(pred: Sequence[int], gold: Sequence[int], n_options: int,
                pred_weight: Sequence[float] | None = None) -> float:
    """WorldValuesBench's individual-data EMD for one question: the 1-D Wasserstein distance between
    the predicted answers and the true answers, both as option positions scaled to [0, 1]
    (position / (K-1), the reference's ``get_normalized_scores``); scipy ``wasserstein_distance``
    as in WorldValuesBench ``evaluation/evaluate.py``. ``pred_weight`` splits tied predictions."""
    from scipy.stats import wasserstein_distance

    scale = max(1, n_options - 1)
    p = np.asarray(pred, dtype=float) / scale
    g = np.asarray(gold, dtype=float) / scale
    return float(wasserstein_distance(g, p, None, pred_weight))


def mean_std(values: Sequence[float]) -> dict[str, float]:
    v = np.asarray(list(values), dtype=float)
    return {"mean": float(v.mean()) if len(v) else float("nan"), "std": float(v.std(ddof=0)) if len(v) else float("nan")}
