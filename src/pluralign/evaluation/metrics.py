"""Metrics for survey answers: accuracy, macro-F1, Earth Mover's distance, Jensen-Shannon, entropy.

Registry: ``METRICS`` maps a name to a function of (predicted, human) distributions so adding a
distribution metric is one decorated function.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable, Sequence

import numpy as np
from scipy.spatial.distance import jensenshannon
from sklearn.metrics import f1_score

DistMetric = Callable[[np.ndarray, np.ndarray, bool], float]
METRICS: dict[str, DistMetric] = {}


def register_metric(name: str) -> Callable[[DistMetric], DistMetric]:
    def deco(fn: DistMetric) -> DistMetric:
        METRICS[name] = fn
        return fn

    return deco


def _check(p: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(p, dtype=float)
    q = np.asarray(q, dtype=float)
    if p.shape != q.shape or p.ndim != 1:
        raise ValueError(f"distributions differ in shape: {p.shape} vs {q.shape}")
    return p / p.sum(), q / q.sum()


@register_metric("emd")
def emd(p: np.ndarray, q: np.ndarray, ordinal: bool = True) -> float:
    """Earth Mover's distance on the ordinal scale 0..K-1, divided by K-1 so it lies in [0, 1]
    (= scipy's 1-D Wasserstein distance / (K-1)). For nominal items the ground distance is 0/1 and
    EMD equals the total-variation distance."""
    p, q = _check(p, q)
    if not ordinal:
        return float(0.5 * np.abs(p - q).sum())
    k = len(p)
    return float(np.abs(np.cumsum(p - q)[:-1]).sum() / (k - 1))


@register_metric("jsd")
def jsd(p: np.ndarray, q: np.ndarray, ordinal: bool = True) -> float:
    """Jensen-Shannon *distance* (square root of the divergence), base 2, in [0, 1]."""
    p, q = _check(p, q)
    return float(jensenshannon(p, q, base=2))


def entropy(p: np.ndarray, normalised: bool = True) -> float:
    """Shannon entropy; ``normalised`` divides by log K so it lies in [0, 1]."""
    p = np.asarray(p, dtype=float)
    p = p / p.sum()
    nz = p[p > 0]
    h = float(-(nz * np.log(nz)).sum())
    return h / np.log(len(p)) if normalised else h


def accuracy(pred: Sequence[int], gold: Sequence[int]) -> float:
    pred, gold = np.asarray(pred), np.asarray(gold)
    return float((pred == gold).mean()) if len(gold) else float("nan")


def macro_f1_per_question(pred: Sequence[int], gold: Sequence[int], question: Sequence[str]) -> float:
    """Macro-F1 within each question (over the labels present in gold or pred), then averaged."""
    by_q: dict[str, list[int]] = defaultdict(list)
    for i, q in enumerate(question):
        by_q[q].append(i)
    pred, gold = np.asarray(pred), np.asarray(gold)
    scores = [f1_score(gold[ix], pred[ix], average="macro", zero_division=0) for ix in by_q.values()]
    return float(np.mean(scores)) if scores else float("nan")


def macro_f1_pooled(pred: Sequence[int], gold: Sequence[int], question: Sequence[str]) -> float:
    """Macro-F1 over all (question, option) classes pooled together."""
    g = [f"{q}:{a}" for q, a in zip(question, gold)]
    p = [f"{q}:{a}" for q, a in zip(question, pred)]
    return float(f1_score(g, p, average="macro", zero_division=0)) if g else float("nan")


def mean_std(values: Sequence[float]) -> dict[str, float]:
    v = np.asarray(list(values), dtype=float)
    return {"mean": float(v.mean()) if len(v) else float("nan"), "std": float(v.std(ddof=0)) if len(v) else float("nan")}
