"""Intervals and tests for word-association results.

* :func:`cue_interval` — the mean of a per-cue metric (P@K, Spearman ρ) with a seeded percentile
  bootstrap interval over cues (``scipy.stats.bootstrap``).
* :func:`paired_change` — two evaluations of the same cues (same split seed and subset): the mean
  difference ``new - base`` and the relative change ``mean(new) / mean(base) - 1`` (how the ALIGN paper
  reports P@5), each with a *paired* bootstrap interval (the same resampled cues for both). The
  relative change is undefined (``None``) unless the baseline mean is positive (a Spearman mean
  below 0 has no meaningful ratio).
* :func:`sign_test` — of the answers that moved (ties dropped), how many moved toward a country,
  against the null of no systematic direction (``scipy.stats.binomtest``, p = 0.5).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

N_BOOT = 2000
LEVEL = 0.95


def _bootstrap(data: tuple, statistic, *, paired: bool, n_boot: int, seed: int, level: float) -> tuple[float, float]:
    import warnings

    from scipy.stats import bootstrap

    with warnings.catch_warnings():  # scipy warns on degenerate replicates (e.g. all-zero P@40 draws)
        warnings.simplefilter("ignore")
        r = bootstrap(data, statistic, n_resamples=n_boot, confidence_level=level, method="percentile",
                      paired=paired, vectorized=True, random_state=np.random.default_rng(seed))
    lo, hi = float(r.confidence_interval.low), float(r.confidence_interval.high)
    return lo, hi


def cue_interval(values: Sequence[float], *, n_boot: int = N_BOOT, seed: int = 0, level: float = LEVEL) -> dict:
    """``{"mean", "low", "high", "n", "level"}``; a single cue (or none) has no interval (``None``)."""
    x = np.asarray(list(values), dtype=float)
    out = {"mean": float(x.mean()) if x.size else float("nan"), "low": None, "high": None, "n": int(x.size), "level": level}
    if x.size >= 2 and np.ptp(x) > 0:
        out["low"], out["high"] = _bootstrap((x,), lambda a, axis=-1: a.mean(axis=axis), paired=False,
                                             n_boot=n_boot, seed=seed, level=level)
    elif x.size >= 2:
        out["low"] = out["high"] = out["mean"]
    return out


def paired_change(base: Mapping[str, float], new: Mapping[str, float], *, n_boot: int = N_BOOT, seed: int = 0,
                  level: float = LEVEL) -> dict:
    """Matched on the cues both evaluations hold. ``diff`` and ``relative`` are
    ``{"value", "low", "high"}`` dicts; ``relative`` is ``None`` when the baseline mean is 0."""
    cues = sorted(set(base) & set(new))
    a = np.asarray([base[c] for c in cues], dtype=float)
    b = np.asarray([new[c] for c in cues], dtype=float)
    out: dict = {"n": len(cues), "level": level, "base_mean": float(a.mean()) if cues else float("nan"),
                 "new_mean": float(b.mean()) if cues else float("nan")}
    if len(cues) < 2:
        out["diff"] = {"value": float(b.mean() - a.mean()) if cues else float("nan"), "low": None, "high": None}
        out["relative"] = None
        return out
    d = b - a
    if np.ptp(d) > 0:
        lo, hi = _bootstrap((d,), lambda x, axis=-1: x.mean(axis=axis), paired=False, n_boot=n_boot, seed=seed, level=level)
    else:
        lo = hi = float(d.mean())
    out["diff"] = {"value": float(d.mean()), "low": lo, "high": hi}
    if not a.mean() > 0:
        out["relative"] = None
        return out

    def rel(x, y, axis=-1):
        ma = x.mean(axis=axis)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(ma > 0, y.mean(axis=axis) / ma - 1.0, np.nan)

    lo = hi = None
    if np.ptp(a) > 0 or np.ptp(b) > 0:
        try:
            lo, hi = _bootstrap((a, b), rel, paired=True, n_boot=n_boot, seed=seed, level=level)
        except ValueError:  # a replicate with a zero baseline mean everywhere: no interval
            lo = hi = None
        if lo is not None and not (np.isfinite(lo) and np.isfinite(hi)):
            lo = hi = None
    out["relative"] = {"value": float(b.mean() / a.mean() - 1.0), "low": lo, "high": hi}
    return out


def sign_test(toward: int, away: int) -> dict:
    """Two-sided exact sign test of ``toward`` vs ``away`` moves (ties already dropped), and the
    one-sided p for "more moved toward"."""
    from scipy.stats import binomtest

    n = int(toward) + int(away)
    if n == 0:
        return {"toward": 0, "away": 0, "n": 0, "p_two_sided": 1.0, "p_greater": 1.0}
    return {"toward": int(toward), "away": int(away), "n": n,
            "p_two_sided": float(binomtest(int(toward), n, 0.5).pvalue),
            "p_greater": float(binomtest(int(toward), n, 0.5, alternative="greater").pvalue)}


def fmt_interval(d: Mapping | None, digits: int = 3, pct: bool = False) -> str:
    """``0.093 [0.071, 0.117]`` (or ``+16 % [+3 %, +31 %]`` with ``pct``); ``–`` when missing."""
    if not d:
        return "–"
    v = d.get("value", d.get("mean"))
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "–"
    f = (lambda x: f"{100 * x:+.0f} %") if pct else (lambda x: f"{x:+.{digits}f}" if "value" in d else f"{x:.{digits}f}")
    if d.get("low") is None:
        return f(v)
    return f"{f(v)} [{f(d['low'])}, {f(d['high'])}]"


__all__ = ["cue_interval", "paired_change", "sign_test", "fmt_interval", "N_BOOT", "LEVEL"]
