"""Word-association intervals and tests: seeded, paired, and right on cases computed by hand."""

import numpy as np
import pytest

from pluralign.wordassoc.stats import cue_interval, fmt_interval, paired_change, sign_test


def test_cue_interval_covers_the_mean_and_is_seeded():
    rng = np.random.default_rng(0)
    x = rng.binomial(5, 0.2, size=300) / 5  # P@5 of 300 cues
    a = cue_interval(x, seed=1)
    assert a["low"] < a["mean"] < a["high"] and a["n"] == 300
    # the percentile interval of a mean of 300 values is about +-1.96 standard errors
    se = x.std(ddof=1) / np.sqrt(len(x))
    assert a["high"] - a["low"] == pytest.approx(2 * 1.96 * se, rel=0.15)
    assert cue_interval(x, seed=1) == a and cue_interval(x, seed=2) != a
    assert cue_interval([0.4])["low"] is None  # one cue: no interval
    assert cue_interval([0.0, 0.0, 0.0])["low"] == 0.0  # constant: a point


def test_paired_change_is_narrower_than_the_marginals_and_matches_on_cues():
    rng = np.random.default_rng(0)
    cues = [f"c{i}" for i in range(200)]
    base = {c: v for c, v in zip(cues, rng.uniform(0.1, 0.9, 200))}
    new = {c: base[c] + 0.05 + rng.normal(0, 0.01) for c in cues}
    new["only-in-new"] = 100.0  # not in the baseline: ignored
    ch = paired_change(base, new, seed=0)
    assert ch["n"] == 200
    assert ch["diff"]["low"] < 0.05 < ch["diff"]["high"] and ch["diff"]["high"] - ch["diff"]["low"] < 0.01
    m = np.mean(list(base.values()))
    assert ch["relative"]["value"] == pytest.approx((m + ch["diff"]["value"]) / m - 1)
    assert ch["relative"]["low"] < ch["relative"]["value"] < ch["relative"]["high"]
    marg = cue_interval(list(base.values()))
    assert ch["diff"]["high"] - ch["diff"]["low"] < (marg["high"] - marg["low"]) / 5
    zero = paired_change({c: 0.0 for c in cues}, {c: 0.1 for c in cues})
    assert zero["relative"] is None and zero["diff"]["value"] == pytest.approx(0.1)


def test_sign_test_hand_computed():
    assert sign_test(5, 0)["p_two_sided"] == pytest.approx(2 / 32)
    assert sign_test(5, 0)["p_greater"] == pytest.approx(1 / 32)
    assert sign_test(3, 3)["p_two_sided"] == pytest.approx(1.0)
    assert sign_test(0, 0)["n"] == 0


def test_fmt_interval():
    assert fmt_interval({"mean": 0.1, "low": 0.05, "high": 0.15}) == "0.100 [0.050, 0.150]"
    assert fmt_interval({"value": 0.16, "low": 0.03, "high": 0.31}, pct=True) == "+16 % [+3 %, +31 %]"
    assert fmt_interval(None) == "–"


def test_no_relative_change_from_a_negative_baseline():
    """A Spearman mean below 0 has no meaningful ratio: only the difference is reported."""
    base = {f"c{i}": -0.3 + 0.01 * i for i in range(10)}
    new = {c: v + 0.2 for c, v in base.items()}
    ch = paired_change(base, new)
    assert ch["relative"] is None and ch["diff"]["value"] == pytest.approx(0.2)
