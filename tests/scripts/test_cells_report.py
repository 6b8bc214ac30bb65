"""scripts/cells_report.py on the committed result files of the three-cell study
(docs/results/cells/runs/three-cells) and on a copy given a second, shifted seed: the tables,
references averaged over the models' own seeds, per-country differences with t intervals, and the
validation cells kept apart from the test cells."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import load_script

RUNS = Path(__file__).resolve().parents[2] / "docs" / "results" / "cells" / "runs" / "three-cells"


@pytest.fixture(scope="module")
def cr():
    return load_script("cells_report")


def _row(cell, name):
    return next(r for r in cell["table"] if r["row"] == name)


def test_report_of_the_committed_runs(cr):
    rep = cr.build(RUNS)
    c = rep["cells"]["A/unseen_questions"]
    cuma = _row(c, "cuma+persona")
    r = json.loads((RUNS / "cuma-A-s0/eval/eval-wvs-shares-persona@unseen_questions.json").read_text())
    assert cuma["emd"] == pytest.approx(r["metrics"]["emd"]) and cuma["option_mass"] == pytest.approx(r["metrics"]["option_mass"])
    assert _row(c, "ref:text_knn")["emd"] == pytest.approx(r["references"]["text_knn"]["metrics"]["emd"])
    d = next(x for x in c["differences"] if x["model"] == "cuma+persona" and x["reference"] == "uniform")
    per = c["per_country"]["cuma+persona - uniform"]
    assert d["countries"] == len(per) and d["diff"] == pytest.approx(np.mean(list(per.values())))
    assert d["t_lo"] < d["diff"] < d["t_hi"] and 0 < d["perm_p"] <= 1
    md = cr.markdown(rep)
    assert "unseen questions x training countries" in md and "cuma+persona" in md


def test_references_are_averaged_over_the_models_seeds_and_validation_cells_stay_apart(cr, tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(RUNS / "cuma-A-s0", root / "cuma-A-s0", ignore=shutil.ignore_patterns("*sampled*"))
    s1 = root / "cuma-A-s1" / "eval"
    s1.mkdir(parents=True)
    for f in (root / "cuma-A-s0" / "eval").glob("eval-*.json"):
        r = json.loads(f.read_text())
        r["metrics"]["emd"] += 0.01  # the model 0.01 worse on seed 1, uniform 0.02 worse: a different split's rows
        r["per_group"] = {g: {**v, "emd": v["emd"] + 0.01} for g, v in r["per_group"].items()}
        r["references"]["uniform"]["metrics"]["emd"] += 0.02
        r["references"]["uniform"]["per_group"] = {g: {**v, "emd": v["emd"] + 0.02} for g, v in r["references"]["uniform"]["per_group"].items()}
        (s1 / f.name).write_text(json.dumps(r))
        if "unseen_questions" in f.name:  # the same run's validation cell (pluralign eval --part validation)
            r["cell"] = "validation/unseen_questions"
            (s1 / f.name.replace("@", "@validation-")).write_text(json.dumps(r))
    base = cr.build(RUNS)["cells"]["A/unseen_questions"]
    c = cr.build(root)["cells"]["A/unseen_questions"]
    cuma, uni = _row(c, "cuma+persona"), _row(c, "ref:uniform")
    assert cuma["seeds"] == uni["seeds"] == [0, 1]
    assert cuma["emd"] == pytest.approx(_row(base, "cuma+persona")["emd"] + 0.005)
    assert uni["emd"] == pytest.approx(_row(base, "ref:uniform")["emd"] + 0.01)  # over the same two seeds
    d = next(x for x in c["differences"] if x["model"] == "cuma+persona" and x["reference"] == "uniform")
    d0 = next(x for x in base["differences"] if x["model"] == "cuma+persona" and x["reference"] == "uniform")
    assert d["seeds"] == [0, 1] and d["diff"] == pytest.approx(d0["diff"] - 0.005)
    rep = cr.build(root)
    assert "A/validation/unseen_questions" in rep["cells"]  # reported, apart from the test cell of the same name
    v = rep["cells"]["A/validation/unseen_questions"]
    assert [r["seeds"] for r in v["table"] if r["row"] == "cuma+persona"] == [[1]]
    assert "VALIDATION" in cr.markdown(rep)
