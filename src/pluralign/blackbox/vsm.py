"""VSM 2013 index arithmetic: item means → six Hofstede dimension scores → L1 loss to a country.

Each index is ``sum_k w_k * (mean[a_k] - mean[b_k]) + C`` over item means on the 1..5 scale (VSM
2013 manual). A model answers with a *distribution* over the five options; its item mean is the
expected answer ``sum_j p_j * j`` (:func:`item_means_from_probs`), which equals in expectation the
mean of answers sampled from it (:func:`item_means_from_samples`).

``C`` is a constant the manual leaves to the researcher ("to shift scores into a 0-100 range"). The
default here is 50 for every dimension: a respondent who gives every item the same mean answer
scores 50, the middle of Hofstede's range. Since the loss compares absolute scores, ``C`` matters
for the L1 numbers (not for differences between prompts); set :class:`VSMConfig.constants` to
reproduce another convention. :mod:`~pluralign.blackbox.objective` has objectives that do not depend
on ``C`` (``C`` calibrated on other countries, or between-country differences).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from pluralign.blackbox.config import VSMConfig
from pluralign.data.loaders.hofstede import DIMENSIONS, HofstedeTarget, VSMQuestionnaire, load_vsm_items
from pluralign.errors import PluralignError


def index_matrix(q: VSMQuestionnaire | None = None) -> np.ndarray:
    """``W[6, 24]`` so that ``scores = means @ W.T + C``: +w at item a, -w at item b per term."""
    q = q or load_vsm_items()
    W = np.zeros((len(DIMENSIONS), 24))
    for d, dim in enumerate(DIMENSIONS):
        for w, a, b in q.terms[dim]:
            W[d, a - 1] += w
            W[d, b - 1] -= w
    return W


def item_means_from_probs(probs: np.ndarray) -> np.ndarray:
    """Expected answer (1..K) from option probabilities ``[..., K]`` (renormalised if needed)."""
    p = np.asarray(probs, dtype=np.float64)
    s = p.sum(-1, keepdims=True)
    if np.any(s <= 0):
        raise PluralignError("an answer distribution has zero mass", field="probs")
    return (p / s) @ np.arange(1, p.shape[-1] + 1, dtype=np.float64)


def item_means_from_samples(answers: np.ndarray) -> np.ndarray:
    """Mean answer per item from sampled answers ``[N, 24]`` coded 1..5."""
    a = np.asarray(answers, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 24:
        raise PluralignError(f"expected answers of shape [N, 24], got {list(a.shape)}", field="answers")
    if np.any((a < 1) | (a > 5)):
        raise PluralignError("answers must be coded 1..5", field="answers")
    return a.mean(0)


def sample_answers(probs: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """``n`` simulated respondents answering each of the 24 items from ``probs[24, 5]`` (codes 1..5)."""
    rng = np.random.default_rng(seed)
    p = np.asarray(probs, dtype=np.float64)
    p = p / p.sum(-1, keepdims=True)
    u = rng.random((n, p.shape[0], 1))
    return (u > np.cumsum(p, -1)[None]).sum(-1) + 1


def dimension_scores(means: np.ndarray, cfg: VSMConfig | None = None, q: VSMQuestionnaire | None = None) -> np.ndarray:
    """Six index scores ``[..., 6]`` (order :data:`DIMENSIONS`) from item means ``[..., 24]``."""
    cfg = cfg or VSMConfig()
    m = np.asarray(means, dtype=np.float64)
    if m.shape[-1] != 24:
        raise PluralignError(f"expected 24 item means, got {m.shape[-1]}", field="means")
    C = np.array([cfg.constants[d] for d in DIMENSIONS])
    return m @ index_matrix(q).T + C


def scores_dict(scores: Sequence[float]) -> dict[str, float]:
    return {d: float(s) for d, s in zip(DIMENSIONS, scores)}


def l1_loss(scores: np.ndarray, target: HofstedeTarget | Mapping[str, float], cfg: VSMConfig | None = None) -> np.ndarray:
    """L1 distance over the target's measured dimensions, per row of ``scores[..., 6]``."""
    cfg = cfg or VSMConfig()
    t = target.scores if isinstance(target, HofstedeTarget) else dict(target)
    if not t:
        raise PluralignError("the target has no measured dimension", field="country")
    idx = [DIMENSIONS.index(d) for d in t]
    tv = np.array([t[d] for d in t])
    diff = np.abs(np.asarray(scores, dtype=np.float64)[..., idx] - tv)
    return diff.mean(-1) if cfg.reduction == "mean" else diff.sum(-1)


__all__ = [
    "DIMENSIONS", "VSMConfig", "dimension_scores", "index_matrix", "item_means_from_probs",
    "item_means_from_samples", "l1_loss", "sample_answers", "scores_dict",
]
