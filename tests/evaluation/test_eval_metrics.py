"""Metrics equal scipy / sklearn and hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import entropy as scipy_entropy
from scipy.stats import wasserstein_distance
from sklearn.metrics import accuracy_score, f1_score

from pluralign.evaluation import metrics as M


def _scipy_emd(p, q):
    k = len(p)
    return wasserstein_distance(np.arange(k), np.arange(k), p, q) / (k - 1)


@pytest.mark.parametrize(
    "p,q,want",
    [
        ([1, 0, 0, 0], [0, 0, 0, 1], 1.0),  # opposite ends: the maximum
        ([1, 0, 0], [0, 1, 0], 0.5),  # one step of two
        ([0.5, 0.5], [0.5, 0.5], 0.0),
        ([0.6, 0.4, 0], [0, 1, 0], 0.3),
        ([0.25, 0.25, 0.25, 0.25], [1, 0, 0, 0], 0.5),  # (0.75 + 0.5 + 0.25) / 3
    ],
)
def test_emd_hand_made(p, q, want):
    assert M.emd(np.array(p, float), np.array(q, float)) == pytest.approx(want, abs=1e-12)
    assert M.emd(np.array(p, float), np.array(q, float)) == pytest.approx(_scipy_emd(p, q), abs=1e-12)
    assert M.emd(np.array(q, float), np.array(p, float)) == pytest.approx(want, abs=1e-12)  # symmetric


def test_emd_random_equals_scipy():
    rng = np.random.default_rng(0)
    for _ in range(200):
        k = int(rng.integers(2, 11))
        p, q = rng.dirichlet(np.ones(k) * 0.5), rng.dirichlet(np.ones(k) * 0.5)
        got = M.emd(p, q)
        assert got == pytest.approx(_scipy_emd(p, q), abs=1e-10)
        assert 0 <= got <= 1


def test_emd_normalises_counts():
    assert M.emd(np.array([3, 1, 0]), np.array([0, 0, 5])) == pytest.approx(_scipy_emd([0.75, 0.25, 0], [0, 0, 1]))


def test_nominal_emd_is_total_variation():
    rng = np.random.default_rng(1)
    assert M.emd(np.array([1.0, 0, 0, 0]), np.array([0, 0, 0, 1.0]), ordinal=False) == pytest.approx(1.0)
    assert M.emd(np.array([0.2, 0.8]), np.array([0.5, 0.5]), ordinal=False) == pytest.approx(0.3)
    for _ in range(50):
        k = int(rng.integers(2, 8))
        p, q = rng.dirichlet(np.ones(k)), rng.dirichlet(np.ones(k))
        assert M.emd(p, q, ordinal=False) == pytest.approx(0.5 * np.abs(p - q).sum(), abs=1e-12)
        # on a scale without order, moving mass to a far option costs no more than to a near one
        assert M.emd(p, q, ordinal=False) <= 1


def test_shape_mismatch():
    with pytest.raises(ValueError, match="differ in shape"):
        M.emd(np.array([0.5, 0.5]), np.array([0.2, 0.3, 0.5]))


def test_jsd_equals_scipy():
    rng = np.random.default_rng(2)
    assert M.jsd(np.array([1.0, 0]), np.array([0, 1.0])) == pytest.approx(1.0)
    assert M.jsd(np.array([0.3, 0.7]), np.array([0.3, 0.7])) == pytest.approx(0.0, abs=1e-7)
    for _ in range(100):
        k = int(rng.integers(2, 11))
        p, q = rng.dirichlet(np.ones(k) * 0.5), rng.dirichlet(np.ones(k) * 0.5)
        assert M.jsd(p, q) == pytest.approx(float(jensenshannon(p, q, base=2)), abs=1e-12)
        assert M.jsd(p, q) == pytest.approx(M.jsd(q, p), abs=1e-12)


def test_entropy_normalised():
    assert M.entropy(np.ones(4) / 4) == pytest.approx(1.0)
    assert M.entropy(np.array([0, 1.0, 0])) == pytest.approx(0.0)
    p = np.array([0.4, 0.6])
    assert M.entropy(p) == pytest.approx(-(0.4 * np.log(0.4) + 0.6 * np.log(0.6)) / np.log(2))
    rng = np.random.default_rng(3)
    for _ in range(20):
        k = int(rng.integers(2, 11))
        q = rng.dirichlet(np.ones(k))
        assert M.entropy(q) == pytest.approx(scipy_entropy(q) / np.log(k))
        assert M.entropy(q, normalised=False) == pytest.approx(scipy_entropy(q))


def test_accuracy_and_f1_hand_made():
    gold = [0, 1, 2, 1, 1, 0]
    pred = [0, 1, 1, 0, 1, 0]
    qs = ["q1", "q1", "q1", "q2", "q2", "q2"]
    assert M.accuracy(pred, gold) == pytest.approx(4 / 6) == accuracy_score(gold, pred)
    # q1: classes 0 (F1 1), 1 (P .5, R 1 -> 2/3), 2 (0) -> 5/9; q2: gold [1,1,0], pred [0,1,0] -> 2/3, 2/3 -> 2/3
    assert M.macro_f1_per_question(pred, gold, qs) == pytest.approx((5 / 9 + 2 / 3) / 2)
    want_q = np.mean([f1_score(gold[:3], pred[:3], average="macro"), f1_score(gold[3:], pred[3:], average="macro")])
    assert M.macro_f1_per_question(pred, gold, qs) == pytest.approx(want_q)
    # pooled: classes q1:0 q1:1 q1:2 q2:0 q2:1 -> F1 1, 2/3, 0, 2/3, 2/3
    assert M.macro_f1_question_option(pred, gold, qs) == pytest.approx(0.6)
    assert M.macro_f1_question_option(pred, gold, qs) == pytest.approx(
        f1_score([f"{q}:{g}" for q, g in zip(qs, gold)], [f"{q}:{p}" for q, p in zip(qs, pred)], average="macro")
    )


def test_accuracy_f1_random_equal_sklearn():
    rng = np.random.default_rng(4)
    gold, pred = rng.integers(0, 4, 60), rng.integers(0, 4, 60)
    qs = ["q"] * 60
    assert M.accuracy(pred, gold) == pytest.approx(accuracy_score(gold, pred))
    assert M.macro_f1_per_question(pred, gold, qs) == pytest.approx(f1_score(gold, pred, average="macro"))


def test_empty_inputs_are_nan():
    assert np.isnan(M.accuracy([], []))
    assert np.isnan(M.macro_f1_per_question([], [], []))
    assert np.isnan(M.mean_std([])["mean"])


def test_mean_std_population():
    assert M.mean_std([0.25, 0.5]) == {"mean": pytest.approx(0.375), "std": pytest.approx(0.125)}


def test_registry():
    assert M.METRICS["emd"] is M.emd and M.METRICS["jsd"] is M.jsd
