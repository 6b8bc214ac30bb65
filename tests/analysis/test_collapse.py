"""Mean collapse: diversity kept is 1 for predictions equal to the human answers, 0 for predictions
equal to the groups' mean, in between for a mixture; the CLI on tiny runs and on bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.analysis._helpers import error_lines, invoke, write_result
from pluralign.analysis.collapse import analyze_collapse, cells_of_result, collapse_stats
from pluralign.analysis.runs import open_run

RNG = np.random.default_rng(0)
GROUPS = [f"G{i}" for i in range(5)]
ITEMS = [f"Q{i}" for i in range(1, 7)]
HUMAN = {(g, q): RNG.dirichlet(np.ones(4) * 0.7) for g in GROUPS for q in ITEMS}
MEAN = {q: np.mean([HUMAN[(g, q)] for g in GROUPS], axis=0) for q in ITEMS}


def _rows(pred_of):
    return [{"group": g, "item_id": q, "probs": list(pred_of(g, q)), "human": list(HUMAN[(g, q)])} for g in GROUPS for q in ITEMS]


def _overall(tmp_path, name, pred_of, kind="distributional", rows=None):
    f = tmp_path / name / "eval" / "eval-synthetic-persona.json"
    write_result(f, kind, rows if rows is not None else _rows(pred_of))
    run = open_run(f.parent)
    a = analyze_collapse([(run.name, r) for _, _, r in run.labelled_results()], references=False)
    return a["series"][0]["overall"], a


def test_human_predictions_keep_all_diversity(tmp_path):
    o, _ = _overall(tmp_path, "human", lambda g, q: HUMAN[(g, q)])
    assert o["diversity_jsd"] == pytest.approx(1.0) and o["diversity_var"] == pytest.approx(1.0)
    assert o["entropy_ratio"] == pytest.approx(1.0)
    assert o["n_groups"] == 5 and o["n_items"] == 6


def test_mean_predictions_collapse_to_zero(tmp_path):
    o, _ = _overall(tmp_path, "mean", lambda g, q: MEAN[q])
    assert o["diversity_jsd"] == pytest.approx(0.0, abs=1e-6) and o["diversity_var"] == pytest.approx(0.0, abs=1e-9)
    assert o["entropy_ratio"] > 1.0  # the mean of distributions has more entropy than they do on average


def test_a_mixture_keeps_part_and_order_is_monotone(tmp_path):
    kept = []
    for w in (0.25, 0.5, 0.75):
        o, _ = _overall(tmp_path, f"mix{w}", lambda g, q, w=w: w * HUMAN[(g, q)] + (1 - w) * MEAN[q])
        kept.append(o["diversity_var"])
        assert 0.0 < o["diversity_jsd"] < 1.0
    assert kept[0] < kept[1] < kept[2]
    assert kept[1] == pytest.approx(0.25, abs=1e-9)  # the expected answer moves linearly: variance scales with w^2


def test_individual_rows_become_group_cells(tmp_path):
    rows = []
    for g, ans in (("A", [0, 0, 1]), ("B", [2, 2, 2])):
        for i, a in enumerate(ans):
            rows.append({"group": g, "item_id": "Q1", "respondent_id": f"{g}{i}", "answer": a, "probs": [0.5, 0.25, 0.25]})
    write_result(tmp_path / "ind" / "eval-x-persona.json", "individual", rows)
    r = json.loads((tmp_path / "ind" / "eval-x-persona.json").read_text())
    c = cells_of_result(r)
    assert np.allclose(c.human[("A", "Q1")], [2 / 3, 1 / 3, 0]) and np.allclose(c.human[("B", "Q1")], [0, 0, 1])
    st = collapse_stats(c)
    assert st["overall"]["diversity_jsd"] == pytest.approx(0.0)  # the same prediction for both groups


def test_tiny_runs_side_by_side_with_references(tiny_runs):
    from pluralign.analysis.runs import open_runs

    runs = open_runs([tiny_runs["cuma"], tiny_runs["lora"]])
    series = [(lab, r) for run in runs for lab, _, r in run.labelled_results()]
    a = analyze_collapse(series)
    labels = [s["label"] for s in a["series"]]
    assert labels[:2] == ["cuma", "lora"] and "ref:train_mean" in labels and "ref:uniform" in labels
    by = {s["label"]: s["overall"] for s in a["series"]}
    assert by["ref:train_mean"]["diversity_jsd"] == pytest.approx(0.0, abs=1e-9)  # the same answer for every group
    assert by["ref:uniform"]["entropy_ratio"] > 1.0
    human = {s["overall"]["human_spread_jsd"] for s in a["series"]}
    assert len({round(h, 9) for h in human}) == 1  # one set of human answers for all
    r = series[0][1]
    assert by["cuma"]["pred_entropy_nats"] == pytest.approx(r["metrics"]["entropy_nats"], rel=1e-4)  # the eval's own number


def test_cli_collapse(tiny_runs, tmp_path):
    out = tmp_path / "col"
    res = invoke("analyze", "collapse", tiny_runs["cuma"], tiny_runs["lora"], "--out", out)
    assert res.exit_code == 0, res.output
    assert "| cuma |" in res.stdout and "diversity kept (JSD)" in res.stdout
    data = json.loads((out / "collapse.json").read_text())
    assert data["schema"] == "pluralign.analysis.collapse/1"
    for name in data["plots"].values():
        assert (out / name).stat().st_size > 1000


def test_cli_collapse_bad_input(tiny_runs, run_without_eval, tmp_path):
    missing = tmp_path / "nope"
    res = invoke("analyze", "collapse", missing, "--out", tmp_path / "o")
    assert res.exit_code == 2 and len(error_lines(res)) == 1 and str(missing) in error_lines(res)[0]
    res = invoke("analyze", "collapse", run_without_eval, "--out", tmp_path / "o")
    assert res.exit_code == 2 and str(run_without_eval) in error_lines(res)[0] and "eval" in error_lines(res)[0]
    res = invoke("analyze", "collapse", tiny_runs["cuma"], "--items", "Q99", "--out", tmp_path / "o")
    assert res.exit_code == 2 and "--items" in error_lines(res)[0]
