"""The benchmarks' own metrics (issue 12) against faithful ports of the reference code.

* OpinionQA representativeness: tatsu-lab/opinions_qa ``helpers.py`` (``get_max_wd``) and
  ``process_results.ipynb`` / ``representativeness.ipynb`` (``WD`` and ``Rep = 1 - WD``);
* GlobalOpinionQA similarity: Durmus et al.'s ``1 - JSD`` with JSD the Jensen-Shannon distance in
  base 2 (``scipy.spatial.distance.jensenshannon(..., base=2)``), so it lies in [0, 1] (issue 29;
  scipy's default natural log gave disjoint distributions 0.167);
* total variation: nicolemeister/benchmarking-distributional-alignment ``utils.py``
  (``calc_total_variation``) and its bootstrap ``eval_utils.py`` (``compute_one``);
* WorldValuesBench W1: Demon702/WorldValuesBench ``evaluation/evaluate.py``
  (``get_normalized_scores`` + ``earth_movers_distance``).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import wasserstein_distance

from pluralign.data import GroupExample, IndividualExample, Profile, SurveyDataset, SurveyItem
from pluralign.evaluation import metrics as M
from pluralign.evaluation.bootstrap import bootstrap_intervals, cell_table
from pluralign.evaluation.runner import compute_metrics


# ----------------------------------------------------------------- ports of the reference code
def oqa_get_max_wd(ordered_ref_weights):  # tatsu-lab/opinions_qa helpers.py
    d0, d1 = np.zeros(len(ordered_ref_weights)), np.zeros(len(ordered_ref_weights))
    d0[np.argmax(ordered_ref_weights)] = 1
    d1[np.argmin(ordered_ref_weights)] = 1
    max_wd = wasserstein_distance(ordered_ref_weights, ordered_ref_weights, d0, d1)
    return max_wd


def oqa_rep(ordinal, D_M, D_H):  # process_results.ipynb: WD; representativeness.ipynb: Rep = 1 - WD
    WD = wasserstein_distance(ordinal, ordinal, D_M, D_H) / oqa_get_max_wd(ordinal)
    return 1 - WD


def goqa_similarity(new_selections, D_m):  # 1 - Jensen-Shannon distance, base 2
    jd = jensenshannon(new_selections, D_m, base=2)
    return 1 - jd


def calc_total_variation(p, q):  # benchmarking-distributional-alignment utils.py
    p = np.array(p)
    q = np.array(q)
    return 0.5 * np.sum(np.abs(p - q))


def compute_one(data, seed=0):  # eval_utils.py compute_one (np.random seeded here)
    rs = np.random.RandomState(seed)
    bootstrap_statistics = []
    for _ in range(1000):
        bootstrap_sample = rs.choice(data, size=len(data), replace=True)
        bootstrap_statistics.append(np.mean(bootstrap_sample))
    lower_bound = np.percentile(bootstrap_statistics, 2.5)
    upper_bound = np.percentile(bootstrap_statistics, 97.5)
    return np.mean(bootstrap_statistics), (upper_bound - lower_bound) / 2


def wvb_normalized(scores, min_range, max_range, min_=0.0, max_=1.0):  # WorldValuesBench evaluate.py
    scores = np.array(scores)
    return (min_ + ((scores - min_range) * max_ / (max_range - min_range))).tolist()


def wvb_emd(gt_answers, model_scores, min_range, max_range):
    return wasserstein_distance(wvb_normalized(gt_answers, min_range, max_range), wvb_normalized(model_scores, min_range, max_range))


RNG = np.random.default_rng(12)
PAIRS = [(RNG.dirichlet(np.ones(k) * a), RNG.dirichlet(np.ones(k) * a)) for k in (2, 3, 4, 5, 7, 10) for a in (0.3, 1.0, 3.0) for _ in range(5)]


def test_registry_holds_every_benchmark_metric():
    for name in ("opinionqa_rep", "goqa_sim", "tv", "wvb_w1", "emd", "jsd"):
        assert name in M.METRICS and name in M.METRIC_INFO
    assert M.METRIC_INFO["opinionqa_rep"]["higher_is_better"] and M.METRIC_INFO["goqa_sim"]["higher_is_better"]
    assert not M.METRIC_INFO["tv"]["higher_is_better"] and not M.METRIC_INFO["wvb_w1"]["higher_is_better"]


@pytest.mark.parametrize("p,q", PAIRS)
def test_opinionqa_representativeness_equals_reference(p, q):
    ordinal = [float(i + 1) for i in range(len(p))]  # option_ordinal of a K-point scale
    assert M.opinionqa_rep(p, q, True) == pytest.approx(oqa_rep(ordinal, p, q), abs=1e-12)


def test_opinionqa_uneven_written_order_matches_after_sorting():
    # option_ordinal [1, 2, 1.5]: the middle answer written last; the loader sorts options by value
    D_M, D_H = np.array([0.2, 0.5, 0.3]), np.array([0.6, 0.1, 0.3])
    order = [0, 2, 1]
    assert M.opinionqa_rep(D_M[order], D_H[order], True) == pytest.approx(oqa_rep([1.0, 2.0, 1.5], D_M, D_H), abs=1e-12)


def test_opinionqa_skips_items_without_order():
    assert oqa_get_max_wd([1, 1, 1]) == 0  # the reference `continue`s on these
    assert np.isnan(M.opinionqa_rep(np.array([0.5, 0.5]), np.array([0.2, 0.8]), False))


@pytest.mark.parametrize("p,q", PAIRS)
def test_goqa_similarity_equals_reference(p, q):
    assert M.goqa_sim(p, q) == pytest.approx(goqa_similarity(q, p), abs=1e-12)
    assert M.goqa_sim(p, q) == pytest.approx(goqa_similarity(p, q), abs=1e-12)  # symmetric
    assert -1e-12 <= M.goqa_sim(p, q) <= 1 + 1e-12


@pytest.mark.parametrize("p,q", PAIRS)
def test_total_variation_equals_reference(p, q):
    assert M.tv(p, q) == pytest.approx(calc_total_variation(p, q), abs=1e-12)
    assert M.tv(p, q, False) == M.tv(p, q, True)


def test_wvb_w1_equals_reference_on_answer_samples():
    rng = np.random.default_rng(3)
    for _ in range(40):
        k = int(rng.integers(2, 11))
        lo = int(rng.integers(1, 3))  # answer scale lo..lo+k-1 as in question_metadata.json
        gt = rng.integers(lo, lo + k, size=int(rng.integers(5, 60)))
        model = rng.integers(lo, lo + k, size=int(rng.integers(5, 60)))
        ref = wvb_emd(gt.tolist(), model.tolist(), lo, lo + k - 1)
        h = np.bincount(gt - lo, minlength=k).astype(float)
        m = np.bincount(model - lo, minlength=k).astype(float)
        assert M.wvb_w1(m, h, True) == pytest.approx(ref, abs=1e-12)
        assert M.wvb_w1(m, h, True) == pytest.approx(1 - M.opinionqa_rep(m, h, True), abs=1e-12)


def test_cell_bootstrap_matches_meister_compute_one():
    tvs = [M.tv(p, q) for p, q in PAIRS] * 2
    groups = [f"g{i}" for i in range(len(tvs))]
    items = [f"q{i}" for i in range(len(tvs))]
    ds = SurveyDataset(
        "t", "distributional", {q: SurveyItem(q, "Q?", ("a", "b")) for q in items},
        [GroupExample(g, Profile(), q, (0.5, 0.5)) for g, q in zip(groups, items)],
    )
    table = cell_table(ds, [np.array([0.5, 0.5])] * len(tvs))
    table.values["tv"] = np.asarray(tvs)
    iv = bootstrap_intervals(table, ["tv"], n_boot=4000, seed=1, unit="cells")["tv"]
    mean, half = compute_one(tvs)
    assert iv["estimate"] == pytest.approx(np.mean(tvs))
    assert mean == pytest.approx(iv["estimate"], abs=0.01)
    assert (iv["hi"] - iv["lo"]) / 2 == pytest.approx(half, rel=0.15)


# ----------------------------------------------------------------- every evaluation reports them
Q1 = SurveyItem("q1", "How important is family?", ("Very", "Rather", "Not very", "Not at all"))
Q2 = SurveyItem("q2", "Which?", ("tea", "coffee", "water"), ordinal=False)


def test_cell_means_equal_runner_metrics_and_references():
    rng = np.random.default_rng(0)
    exs, preds = [], []
    for g in ("United States", "Germany", "Japan"):
        for it in (Q1, Q2):
            exs.append(GroupExample(g, Profile(country=g), it.id, tuple(rng.dirichlet(np.ones(it.n_options)))))
            preds.append(rng.dirichlet(np.ones(it.n_options)))
    ds = SurveyDataset("t", "distributional", {"q1": Q1, "q2": Q2}, exs)
    overall, _ = compute_metrics(ds, preds)
    table = cell_table(ds, preds)
    for m in ("emd", "jsd", "accuracy", "entropy"):
        assert table.mean(m) == pytest.approx(overall[m], abs=1e-12)
    want_rep = np.mean([oqa_rep([1.0, 2, 3, 4], p, np.array(e.probs)) for p, e in zip(preds, exs) if e.item_id == "q1"])
    assert table.mean("opinionqa_rep") == pytest.approx(want_rep, abs=1e-12)  # the nominal item is left out
    want_sim = np.mean([goqa_similarity(np.array(e.probs), p) for p, e in zip(preds, exs)])
    assert table.mean("goqa_sim") == pytest.approx(want_sim, abs=1e-12)
    want_tv = np.mean([calc_total_variation(p, e.probs) for p, e in zip(preds, exs)])
    assert table.mean("tv") == pytest.approx(want_tv, abs=1e-12)


def test_individual_cells_compare_group_answers():
    rows = [("r1", "US", 0), ("r2", "US", 1), ("r3", "US", 1), ("r4", "DE", 3)]
    exs = [IndividualExample(r, Profile(country=c), "q1", a) for r, c, a in rows]
    ds = SurveyDataset("p", "individual", {"q1": Q1}, exs)
    preds = [np.array([0.7, 0.1, 0.1, 0.1]), np.array([0.1, 0.7, 0.1, 0.1]), np.array([0.25] * 4), np.array([0.1, 0.2, 0.3, 0.4])]
    overall, _ = compute_metrics(ds, preds)
    t = cell_table(ds, preds)
    assert len(t) == 2 and t.mean("emd") == pytest.approx(overall["emd"]) and t.mean("accuracy") == pytest.approx(overall["accuracy"])
    us_pred = np.mean(preds[:3], axis=0)
    assert t.values["tv"][0] == pytest.approx(calc_total_variation(us_pred, [1 / 3, 2 / 3, 0, 0]))
    assert list(t.weights["accuracy"]) == [3.0, 1.0]
