"""Word-association metrics and rewards.

* :func:`precision_at_k` — of the model's first ``k`` distinct associations, the fraction that some
  human gave for that cue (the gold set is every response of the cue in the strength file, matched on
  :func:`~pluralign.wordassoc.tasks.normalise`). Missing associations (the model gave fewer than
  ``k``) count as misses, so the denominator is always ``k``: a model that writes fewer distinct
  words scores lower at large ``k`` whatever their quality. :func:`distinct_counts` reports how
  many distinct words each cue got, and the evaluation reports P@N at a fixed number N of generated
  words (:func:`pluralign.wordassoc.generate.evaluate_generation`, ``fixed_words``), where every cue
  is topped up to N words first, so that word count no longer enters.

  Source of the definition. The ALIGN paper (Liu, Shrestha & Huang, "ALIGN: Word Association
  Learning for Cultural Alignment in Large Language Models", ACL 2026, arXiv:2508.13426) reports
  "Precision@5" (abstract: "16–20% English, 43–165% Mandarin on Precision@5"); the stored copies of
  the paper we could search hold its abstract only, not the section that defines the metric, so its
  exact formula (gold set, denominator) is not verified here. The definition above is the standard
  ranked-retrieval "precision at k" (Manning, Raghavan & Schütze, *Introduction to Information
  Retrieval*, 2008, §8.4): relevant items among the top k retrieved, divided by k.
* :func:`ranking_spearman` — Spearman's ρ between the model's order of the candidates and the
  human strengths. Candidates the model did not list share the bottom rank (average of the
  remaining ranks); words that are not candidates are ignored. No candidate listed → ``-1``
  (the worst score, so an RL policy cannot escape the task by answering nothing); a constant
  order or constant strengths → ``0``.
* :data:`REWARDS` — reward functions in TRL's signature ``f(prompts, completions, **columns)``;
  ``spearman`` is the ALIGN ranking reward.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Sequence

import numpy as np
from scipy.stats import spearmanr

from pluralign.registry import Registry
from pluralign.wordassoc.tasks import normalise, parse_associations


def precision_at_k(generated: Sequence[str], human: Iterable[str], k: int) -> float:
    if k < 1:
        raise ValueError("k must be >= 1")
    gold = {normalise(h) for h in human}
    top = []
    for g in generated:
        n = normalise(g)
        if n and n not in top:
            top.append(n)
        if len(top) == k:
            break
    return sum(g in gold for g in top) / k


def distinct_counts(words_per_cue: Sequence[Sequence[str]], ks: Sequence[int] = ()) -> dict:
    """How many distinct (normalised) associations each cue got: mean, median, min, max and, for each
    ``k``, the share of cues with at least ``k`` (below that, P@k counts missing words as misses)."""
    n = np.array([len({normalise(w) for w in ws if normalise(w)}) for ws in words_per_cue], dtype=float)
    if not n.size:
        return {"n_cues": 0}
    return {"n_cues": int(n.size), "mean": float(n.mean()), "median": float(np.median(n)), "min": int(n.min()), "max": int(n.max()),
            "share_at_least": {str(k): float((n >= k).mean()) for k in ks}}


def model_ranks(ranked: Sequence[str], candidates: Sequence[str]) -> np.ndarray | None:
    """Rank (1 = first) of each candidate in the model's list; unlisted candidates share the mean
    of the remaining ranks. ``None`` when no candidate is listed."""
    index = {normalise(c): i for i, c in enumerate(candidates)}
    n = len(candidates)
    ranks = np.full(n, np.nan)
    r = 0
    for w in ranked:
        i = index.get(normalise(w))
        if i is not None and np.isnan(ranks[i]):
            r += 1
            ranks[i] = r
    if r == 0:
        return None
    missing = np.isnan(ranks)
    if missing.any():
        ranks[missing] = (r + 1 + n) / 2.0  # mean of ranks r+1 .. n
    return ranks


def ranking_spearman(ranked: Sequence[str], candidates: Sequence[str], strengths: Sequence[float]) -> float:
    ranks = model_ranks(ranked, candidates)
    if ranks is None:
        return -1.0
    s = np.asarray(strengths, dtype=float)
    if np.ptp(ranks) == 0 or np.ptp(s) == 0:
        return 0.0
    rho = spearmanr(-ranks, s).statistic
    return 0.0 if rho is None or math.isnan(rho) else float(rho)


def _text(completion) -> str:
    """A TRL completion is a string (standard format) or a list of messages (conversational)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    return str(completion)


RewardFn = Callable[..., list[float]]
REWARDS: Registry[RewardFn] = Registry("reward", field="reward")


def register_reward(name: str) -> Callable[[RewardFn], RewardFn]:
    def deco(fn: RewardFn) -> RewardFn:
        fn.__name__ = name  # TRL logs rewards under the function name
        return REWARDS.add(name, fn)

    return deco


@register_reward("spearman")
def spearman_reward(prompts, completions, candidates, strengths, **_) -> list[float]:
    """ALIGN's ranking reward: Spearman ρ of the completion's order vs the human strengths."""
    return [
        ranking_spearman(parse_associations(_text(c)), cands, strs)
        for c, cands, strs in zip(completions, candidates, strengths)
    ]


@register_reward("precision")
def precision_reward(prompts, completions, human, k=None, **_) -> list[float]:
    """Generation reward: the fraction of generated associations that humans gave (P@k with
    k = number of words asked for, per record)."""
    ks = k if k is not None else [3] * len(completions)
    return [precision_at_k(parse_associations(_text(c)), h, int(kk)) for c, h, kk in zip(completions, human, ks)]


__all__ = ["precision_at_k", "distinct_counts", "model_ranks", "ranking_spearman", "spearman_reward", "precision_reward", "REWARDS", "register_reward"]
