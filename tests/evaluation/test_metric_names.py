"""Metrics as named (issue 29, part 5), each checked against an independent implementation of the
formula its paper gives:

* ``goqa_sim``: Durmus et al. 2023, similarity = 1 - JSD with JSD the Jensen-Shannon distance in
  base 2, in [0, 1] (disjoint -> 0, identical -> 1);
* ``jsd`` is the Jensen-Shannon *distance* (base 2), ``js_divergence`` the *divergence* in nats,
  what Meister et al. 2024 call "JSD" (their ``calc_jsd``: ``jensenshannon(p, q) ** 2``);
* ``tv``: Meister et al.'s total variation, also as the largest difference of an event's probability;
* ``opinionqa_rep``: Santurkar et al. 2023, 1 - W1 / (K - 1) over the ordinal positions;
* ``wvb_w1``: WorldValuesBench, W1 between answers scaled to [0, 1] (scipy ``wasserstein_distance``);
* ``macro_f1``: (question, option) is the class; ``macro_f1_option_label`` pools option numbers;
* ``nll``: mean -ln p(answer), each probability clipped below at 1e-12.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import jensenshannon
from scipy.stats import wasserstein_distance
from sklearn.metrics import f1_score

from pluralign.data import IndividualExample, Profile, SurveyDataset, SurveyItem
from pluralign.evaluation import metrics as M
from pluralign.evaluation.runner import compute_metrics


# ------------------------------------------------------------------ independent implementations
def _kl(p, q):
    p, q = np.asarray(p, float), np.asarray(q, float)
    nz = p > 0
    return float(np.sum(p[nz] * np.log(p[nz] / q[nz])))


def js_divergence_nats(p, q):  # 0.5 KL(p || m) + 0.5 KL(q || m), m = (p + q) / 2
    m = (np.asarray(p, float) + np.asarray(q, float)) / 2
    return 0.5 * _kl(p, m) + 0.5 * _kl(q, m)


def durmus_similarity(p, q):  # 1 - Jensen-Shannon distance with log base 2
    return 1 - math.sqrt(max(js_divergence_nats(p, q) / math.log(2), 0.0))


def meister_calc_jsd(p, q):  # benchmarking-distributional-alignment utils.py: calc_jsd
    return jensenshannon(p, q) ** 2


def meister_calc_total_variation(p, q):  # benchmarking-distributional-alignment utils.py
    return 0.5 * np.sum(np.abs(np.array(p) - np.array(q)))


def santurkar_representativeness(p, q):  # 1 - W1(D_M, D_H) / (K - 1) on the ordinal positions
    k = len(p)
    pos = np.arange(k, dtype=float)
    return 1 - wasserstein_distance(pos, pos, p, q) / (k - 1)


def wvb_w1(p, q):  # WorldValuesBench: answers scaled to [0, 1], scipy's W1
    k = len(p)
    pos = np.arange(k, dtype=float) / (k - 1)
    return wasserstein_distance(pos, pos, p, q)


@st.composite
def pairs(draw, max_k: int = 8):
    """Two distributions on the same K options, with zeros, point masses and near-ties."""
    k = draw(st.integers(2, max_k))
    w = st.one_of(st.just(0.0), st.floats(0.0, 1.0, allow_subnormal=False), st.sampled_from([1e-9, 0.5, 1.0]))
    p = np.array(draw(st.lists(w, min_size=k, max_size=k)))
    q = np.array(draw(st.lists(w, min_size=k, max_size=k)))
    p[draw(st.integers(0, k - 1))] += 1e-3  # never all zero
    q[draw(st.integers(0, k - 1))] += 1e-3
    return p / p.sum(), q / q.sum()


# ------------------------------------------------------------------ Jensen-Shannon and GOQA
def test_goqa_similarity_is_zero_for_disjoint_and_one_for_identical():
    for p, q in (([1, 0], [0, 1]), ([0.5, 0.5, 0, 0], [0, 0, 0.3, 0.7]), ([1, 0, 0], [0, 0, 1])):
        assert M.goqa_sim(np.array(p, float), np.array(q, float)) == pytest.approx(0.0, abs=1e-12)
        assert M.jsd(np.array(p, float), np.array(q, float)) == pytest.approx(1.0, abs=1e-12)
        assert M.js_divergence(np.array(p, float), np.array(q, float)) == pytest.approx(math.log(2), abs=1e-12)
    for p in ([1, 0], [0.2, 0.3, 0.5], [0.25] * 4):
        assert M.goqa_sim(np.array(p, float), np.array(p, float)) == pytest.approx(1.0, abs=1e-7)
        assert M.js_divergence(np.array(p, float), np.array(p, float)) == pytest.approx(0.0, abs=1e-12)
    # the natural-log version this replaced left 1 - sqrt(ln 2) = 0.167 for disjoint distributions
    assert 1 - jensenshannon([1, 0], [0, 1]) == pytest.approx(1 - math.sqrt(math.log(2)))


def test_a_subnormal_probability_does_not_make_the_divergence_infinite():
    p, q = np.array([1.0, 0, 0]), np.array([1e-3, 1 - 1e-3, 5e-324])  # (0 + 5e-324) / 2 underflows to 0
    assert M.jsd(p, q) == pytest.approx(M.jsd(p, np.array([1e-3, 1 - 1e-3, 0])))
    assert math.isfinite(M.js_divergence(p, q)) and 0 <= M.goqa_sim(p, q) <= 1


@settings(max_examples=300, deadline=None)
@given(pairs())
def test_jensen_shannon_distance_divergence_and_similarity_against_the_formulas(pq):
    p, q = pq
    div = js_divergence_nats(p, q)
    assert M.js_divergence(p, q) == pytest.approx(div, abs=1e-9)  # the divergence, nats
    assert M.js_divergence(p, q) == pytest.approx(meister_calc_jsd(p, q), abs=1e-12)
    assert M.jsd(p, q) == pytest.approx(math.sqrt(max(div / math.log(2), 0.0)), abs=1e-6)  # the distance, base 2
    assert M.js_divergence(p, q) == pytest.approx(M.jsd(p, q) ** 2 * math.log(2), abs=1e-12)
    assert M.goqa_sim(p, q) == pytest.approx(durmus_similarity(p, q), abs=1e-6)
    assert M.goqa_sim(p, q) == pytest.approx(1 - M.jsd(p, q), abs=1e-12)
    assert -1e-12 <= M.goqa_sim(p, q) <= 1 + 1e-12 and -1e-12 <= M.js_divergence(p, q) <= math.log(2) + 1e-12


# ------------------------------------------------------------------ TV, representativeness, W1
@settings(max_examples=300, deadline=None)
@given(pairs())
def test_total_variation_equals_meister_and_the_largest_event_difference(pq):
    p, q = pq
    assert M.tv(p, q) == pytest.approx(meister_calc_total_variation(p, q), abs=1e-12)
    k = len(p)
    biggest = max(abs(p[list(a)].sum() - q[list(a)].sum()) for r in range(k + 1) for a in itertools.combinations(range(k), r))
    assert M.tv(p, q) == pytest.approx(biggest, abs=1e-12)


@settings(max_examples=300, deadline=None)
@given(pairs(max_k=11))
def test_opinionqa_representativeness_and_wvb_w1_against_scipy_wasserstein(pq):
    p, q = pq
    assert M.opinionqa_rep(p, q, True) == pytest.approx(santurkar_representativeness(p, q), abs=1e-9)
    assert M.wvb_w1(p, q, True) == pytest.approx(wvb_w1(p, q), abs=1e-9)
    assert 0 - 1e-12 <= M.wvb_w1(p, q, True) <= 1 + 1e-12


def test_representativeness_and_w1_at_the_extremes():
    a, b = np.array([1.0, 0, 0, 0, 0]), np.array([0, 0, 0, 0, 1.0])
    assert M.opinionqa_rep(a, b, True) == pytest.approx(0.0) and M.wvb_w1(a, b, True) == pytest.approx(1.0)
    assert M.opinionqa_rep(a, a, True) == pytest.approx(1.0) and M.wvb_w1(a, a, True) == pytest.approx(0.0)
    # one step of four on a 5-point scale
    assert M.opinionqa_rep(a, np.array([0, 1.0, 0, 0, 0]), True) == pytest.approx(0.75)


def test_registry_names_the_two_jensen_shannon_quantities():
    assert M.METRICS["js_divergence"] is M.js_divergence and not M.METRIC_INFO["js_divergence"]["higher_is_better"]
    assert "distance" in M.METRIC_INFO["jsd"]["description"] and "base 2" in M.METRIC_INFO["jsd"]["description"]
    assert "divergence" in M.METRIC_INFO["js_divergence"]["description"] and "natural log" in M.METRIC_INFO["js_divergence"]["description"]
    assert "base 2" in M.METRIC_INFO["goqa_sim"]["description"]


# ------------------------------------------------------------------ macro-F1 and NLL in compute_metrics
Q1 = SurveyItem("q1", "How important is family in your life?", ("Very important", "Rather important", "Not very important"))
Q2 = SurveyItem("q2", "Do you agree?", ("Agree strongly", "Disagree"))
US, DE = Profile(country="United States"), Profile(country="Germany")


def _ds(rows):
    return SurveyDataset("p", "individual", {"q1": Q1, "q2": Q2}, [IndividualExample(r, p, q, a) for r, p, q, a in rows], source="hand")


def test_headline_macro_f1_keeps_the_questions_options_apart():
    # q1: gold 0, 0, 1 predicted right; q2: gold 1 predicted 0 ("Agree strongly" is not "Very important")
    ds = _ds([("r1", US, "q1", 0), ("r2", US, "q1", 0), ("r3", DE, "q1", 1), ("r1", US, "q2", 1)])
    probs = [np.array([0.8, 0.1, 0.1]), np.array([0.6, 0.3, 0.1]), np.array([0.1, 0.7, 0.2]), np.array([0.9, 0.1])]
    m, _ = compute_metrics(ds, probs)
    gold, pred, qs = [0, 0, 1, 1], [0, 0, 1, 0], ["q1", "q1", "q1", "q2"]
    # (question, option) classes q1:0 (F1 1), q1:1 (1), q2:0 (0, predicted only), q2:1 (0, true only)
    assert m["macro_f1"] == pytest.approx(0.5)
    classes_gold, classes_pred = [f"{q}:{g}" for q, g in zip(qs, gold)], [f"{q}:{p}" for q, p in zip(qs, pred)]
    assert m["macro_f1"] == pytest.approx(f1_score(classes_gold, classes_pred, average="macro"))
    # option numbers pooled: class 0 (P 2/3, R 1 -> 0.8), class 1 (P 1, R 1/2 -> 2/3)
    assert m["macro_f1_option_label"] == pytest.approx((0.8 + 2 / 3) / 2)
    assert m["macro_f1_option_label"] == pytest.approx(f1_score(gold, pred, average="macro"))
    assert "macro_f1_pooled" not in m
    assert M.macro_f1_question_option(pred, gold, qs) == pytest.approx(0.5)
    assert M.macro_f1_option_label(pred, gold) == pytest.approx((0.8 + 2 / 3) / 2)


def test_nll_of_the_respondents_answer_overall_and_per_group():
    ds = _ds([("r1", US, "q1", 0), ("r2", US, "q2", 1), ("r3", DE, "q1", 2), ("r4", DE, "q2", 0)])
    probs = [np.array([0.5, 0.25, 0.25]), np.array([0.2, 0.8]), np.array([0.6, 0.4, 0.0]), np.array([2.0, 2.0])]
    m, g = compute_metrics(ds, probs)
    us = [-math.log(0.5), -math.log(0.8)]
    de = [-math.log(1e-12), -math.log(0.5)]  # zero probability clipped at 1e-12; unnormalised [2, 2] -> 0.5
    assert m["nll"] == pytest.approx(np.mean(us + de))
    assert g["United States"]["nll"] == pytest.approx(np.mean(us)) and g["Germany"]["nll"] == pytest.approx(np.mean(de))
    assert M.nll(np.array([0.0, 1.0]), 0) == pytest.approx(12 * math.log(10))
    # uniform over K options: ln K whatever the answer
    assert M.nll(np.full(5, 0.2), 3) == pytest.approx(math.log(5))


def test_nll_is_only_for_individual_data():
    from pluralign.data import GroupExample

    g = SurveyDataset("t", "distributional", {"q1": Q1}, [GroupExample("United States", US, "q1", (0.2, 0.3, 0.5))])
    m, per = compute_metrics(g, [np.array([0.2, 0.3, 0.5])])
    assert "nll" not in m and "nll" not in per["United States"]
