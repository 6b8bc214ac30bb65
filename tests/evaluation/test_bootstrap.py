"""Seeded bootstrap intervals over groups and items, and paired differences (issue 12)."""

from __future__ import annotations

import numpy as np
import pytest

from pluralign.evaluation.bootstrap import CellTable, bootstrap_intervals, paired_difference


def _table(values, groups, items, name="tv") -> CellTable:
    return CellTable(list(groups), list(items), {name: np.asarray(values, dtype=float)})


def _grid(G, I):
    return [f"g{g}" for g in range(G) for _ in range(I)], [f"q{i}" for _ in range(G) for i in range(I)]


def test_seeded_and_reproducible():
    rng = np.random.default_rng(0)
    g, q = _grid(6, 10)
    t = _table(rng.random(60), g, q)
    a = bootstrap_intervals(t, n_boot=300, seed=5)["tv"]
    b = bootstrap_intervals(t, n_boot=300, seed=5)["tv"]
    c = bootstrap_intervals(t, n_boot=300, seed=6)["tv"]
    assert a == b and a != c
    assert a["lo"] < a["estimate"] < a["hi"]


def test_cells_interval_covers_the_true_mean_about_95_percent():
    """Values drawn i.i.d. from a known distribution (Beta(2, 5), mean 2/7): the percentile
    interval of the cell bootstrap covers 2/7 in about 95 % of the simulated data sets."""
    rng = np.random.default_rng(1)
    true, hits, sims = 2 / 7, 0, 300
    g, q = _grid(10, 20)
    for s in range(sims):
        t = _table(rng.beta(2, 5, size=200), g, q)
        iv = bootstrap_intervals(t, n_boot=400, seed=s, unit="cells")["tv"]
        hits += iv["lo"] <= true <= iv["hi"]
    assert 0.90 <= hits / sims <= 0.99, hits / sims


def test_two_way_interval_covers_with_group_and_item_effects():
    """value = group effect + item effect + noise, mean 0: the groups x items bootstrap covers 0
    in about 95 % of simulations (the pigeonhole bootstrap is known to be mildly conservative),
    while resampling cells i.i.d. ignores the shared effects and covers far less often."""
    rng = np.random.default_rng(2)
    G, I, sims = 8, 12, 200
    g, q = _grid(G, I)
    gi, ii = np.repeat(np.arange(G), I), np.tile(np.arange(I), G)
    both = cells = 0
    for s in range(sims):
        v = rng.normal(0, 1, G)[gi] + rng.normal(0, 1, I)[ii] + rng.normal(0, 0.5, G * I)
        t = _table(v, g, q)
        a = bootstrap_intervals(t, n_boot=400, seed=s, unit="both")["tv"]
        b = bootstrap_intervals(t, n_boot=400, seed=s, unit="cells")["tv"]
        both += a["lo"] <= 0 <= a["hi"]
        cells += b["lo"] <= 0 <= b["hi"]
    assert 0.88 <= both / sims <= 1.0, both / sims
    assert cells / sims < 0.7, cells / sims


def test_paired_difference_is_narrower_and_covers_the_true_difference():
    rng = np.random.default_rng(3)
    G, I = 10, 20
    g, q = _grid(G, I)
    shared = rng.normal(0, 1, G)[np.repeat(np.arange(G), I)] + rng.normal(0, 1, I)[np.tile(np.arange(I), G)]
    a = _table(shared + 0.1 + rng.normal(0, 0.05, G * I), g, q)
    b = _table(shared + rng.normal(0, 0.05, G * I), g, q)
    d = paired_difference(a, b, n_boot=500, seed=0)["tv"]
    ia = bootstrap_intervals(a, n_boot=500, seed=0)["tv"]
    assert d["lo"] <= 0.1 <= d["hi"] and d["lo"] > 0 and d["p"] < 0.05
    assert d["hi"] - d["lo"] < 0.2 * (ia["hi"] - ia["lo"])
    assert d["diff"] == pytest.approx(a.mean("tv") - b.mean("tv"))
    assert d["n_cells"] == G * I


def test_paired_difference_uses_common_cells_only():
    a = _table([0.1, 0.2, 0.3, 0.4], ["g1", "g1", "g2", "g2"], ["q1", "q2", "q1", "q2"])
    b = _table([0.0, 0.0, 0.0], ["g2", "g1", "g2"], ["q2", "q1", "q1"])  # g1:q2 missing, other order
    d = paired_difference(a, b, n_boot=100, seed=0)["tv"]
    assert d["n_cells"] == 3 and d["diff"] == pytest.approx((0.1 + 0.3 + 0.4) / 3)


def test_weights_nan_and_json_round_trip():
    t = CellTable(["a", "a", "b"], ["q1", "q2", "q1"], {"accuracy": np.array([1.0, 0.0, np.nan]), "tv": np.array([0.2, 0.4, 0.6])},
                  {"accuracy": np.array([3.0, 1.0, 2.0])})
    assert t.mean("accuracy") == pytest.approx(0.75)  # weighted by rows, nan left out
    back = CellTable.from_json(t.to_json())
    assert back.group == t.group and back.item == t.item
    assert np.isnan(back.values["accuracy"][2]) and back.mean("accuracy") == pytest.approx(0.75)
    assert back.mean("tv") == pytest.approx(0.4)


def test_one_cell_has_no_interval_and_bad_unit_is_an_error():
    from pluralign.errors import PluralignError

    t = _table([0.3], ["g"], ["q"])
    iv = bootstrap_intervals(t, n_boot=50)["tv"]
    assert iv["estimate"] == 0.3 and iv["lo"] is None
    assert bootstrap_intervals(t, n_boot=0) == {}
    with pytest.raises(PluralignError, match="bootstrap unit"):
        bootstrap_intervals(_table([0.1, 0.2], ["a", "b"], ["q", "q"]), n_boot=10, unit="people")


def _individual(n_groups=6, n_items=5, n_resp=12, seed=0, noise=0.5):
    from pluralign.data.items import SurveyItem
    from pluralign.data.profile import Profile
    from pluralign.data.tasks import IndividualExample, SurveyDataset

    rng = np.random.default_rng(seed)
    items = {f"q{i}": SurveyItem(id=f"q{i}", text=f"question {i}?", options=tuple("12345"[: 3 + i % 3])) for i in range(n_items)}
    exs, probs = [], []
    for g in range(n_groups):
        for q, it in items.items():
            for r in range(n_resp):
                a = int(rng.integers(0, it.n_options))
                exs.append(IndividualExample(f"{g}-{r}", Profile(country=f"C{g}"), q, a))
                p = rng.dirichlet(np.ones(it.n_options)) * noise
                p[a] += 1 - noise if rng.random() < 0.6 else 0
                if rng.random() < 0.1:
                    p = np.full(it.n_options, 1.0 / it.n_options)  # ties: split rows
                probs.append(p / p.sum())
    return SurveyDataset("toy", "individual", items, exs, source="test"), probs


def test_row_level_metric_intervals_recompute_the_metrics_of_the_runner():
    """macro-F1 and WorldValuesBench's EMD get intervals too: the point estimate is the runner's
    number, replicates recompute it on resampled rows, the interval is seeded and contains it."""
    from pluralign.evaluation.bootstrap import ROW_LEVEL, row_metric_intervals
    from pluralign.evaluation.runner import compute_metrics

    test, probs = _individual()
    overall, _ = compute_metrics(test, probs)
    iv = row_metric_intervals(test, probs, n_boot=300, seed=1)
    assert set(iv) == set(ROW_LEVEL)
    for m in ROW_LEVEL:
        assert iv[m]["estimate"] == pytest.approx(overall[m], abs=1e-9), m
        assert iv[m]["lo"] < iv[m]["estimate"] < iv[m]["hi"], (m, iv[m])
    assert row_metric_intervals(test, probs, n_boot=300, seed=1) == iv
    narrow = row_metric_intervals(*_individual(n_groups=24, n_resp=40), n_boot=300, seed=1)
    width = lambda v: v["macro_f1_option_label"]["hi"] - v["macro_f1_option_label"]["lo"]  # noqa: E731
    assert width(narrow) < width(iv)


def test_row_level_intervals_cover_the_population_value_about_95_percent():
    """Seeded samples of one known population of groups: the two-way interval of macro-F1 holds
    the population value in roughly 95 % of them (wide tolerance, few repetitions)."""
    from pluralign.evaluation.bootstrap import row_metric_intervals
    from pluralign.evaluation.runner import compute_metrics

    big, bp = _individual(n_groups=60, n_items=5, n_resp=20, seed=99)
    truth = compute_metrics(big, bp)[0]["macro_f1_option_label"]
    hits = 0
    for s in range(20):
        t, p = _individual(n_groups=8, n_items=5, n_resp=20, seed=100 + s)
        iv = row_metric_intervals(t, p, n_boot=200, seed=s)["macro_f1_option_label"]
        hits += iv["lo"] <= truth <= iv["hi"]
    assert hits >= 15
