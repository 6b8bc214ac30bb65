"""`pluralign train/eval --split country,question`: three cells, each beside its references, with the
references' settings chosen on validation rows, and no test cell ever trained on."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from pluralign.cli.main import app

COUNTRIES = "USA,DEU,THA,CHN,GBR,BRA,NGA,IND,MEX,KEN"
QUESTIONS = ",".join(f"Q{i}" for i in range(1, 17))

pytestmark = pytest.mark.usefixtures("one_thread")


def _invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_model_dir):
    out = tmp_path_factory.mktemp("run2") / "lora"
    res = _invoke(
        "train", "--method", "lora", "--task", "distributional", "--model", tiny_model_dir, "--data", "wvs-shares",
        "--countries", COUNTRIES, "--questions", QUESTIONS, "--split", "country,question", "--test-units", "USA,THA",
        "--test-questions", "Q2,Q5,Q9", "--val-frac", "0.45", "--option-mass-weight", "0.5", "--soft-label-norm", "options",
        "--no-chat-template", "--steps", "1", "--batch-size", "4", "--save-steps", "0", "--no-progress", "--out", out,
    )
    assert res.exit_code == 0, res.output
    return out


def test_two_way_run_records_its_cells_and_eval_scores_each(run, tiny_model_dir, tmp_path):
    split = json.loads((run / "split.json").read_text())
    assert split["by"] == "country,question" and split["test_questions"] == ["Q2", "Q5", "Q9"] and split["val_frac"] == 0.45
    assert "country:United States" in split["test_unit_list"] and "question:Q5" in split["test_unit_list"]
    val = set(split["val_unit_list"])
    assert val and not (val & set(split["test_unit_list"]))
    out = tmp_path / "ev"
    res = _invoke("eval", "--model", tiny_model_dir, "--adapter", run / "adapter", "--text-encoder", "tfidf",
                  "--no-plot", "--no-progress", "--bootstrap", "50", "--out", out)
    assert res.exit_code == 0, res.output
    names = sorted(p.name for p in out.glob("eval-*.json"))
    assert names == [f"eval-wvs-shares-persona@{c}.json" for c in ("unseen_both", "unseen_countries", "unseen_questions")]
    test_c, test_q = {"United States", "Thailand"}, {"Q2", "Q5", "Q9"}
    for name in names:
        r = json.loads((out / name).read_text())
        cell = r["cell"]
        assert r["split"]["trained_rows_in_test"] == 0
        for p in r["predictions"]:
            in_c, in_q = p["group"] in test_c, p["item_id"] in test_q
            assert (in_c, in_q) == {"unseen_questions": (False, True), "unseen_countries": (True, False), "unseen_both": (True, True)}[cell]
        refs = set(r["references"])
        assert "uniform" in refs and "option_mass" in r["metrics"]
        if cell == "unseen_countries":
            assert {"train_mean", "culture_map_knn", "culture_map_kernel"} <= refs
        else:
            assert "text_knn" in refs and r["references"]["train_mean"]["metrics"]["n"] == 0  # no training row answered these
        rs = r["reference_settings"]
        assert rs["chosen_on"] == "validation" and rs["map_k"] == int(min(rs["validation"]["map_k"], key=rs["validation"]["map_k"].get))
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["cells"]) == {"unseen_questions", "unseen_countries", "unseen_both"}
    assert "### unseen_countries" in res.output and "ref:culture_map_kernel" in res.output


def test_a_test_cell_is_never_a_training_row(run, tiny_model_dir, tmp_path):
    # scoring the run's training countries on one-way question split with other test questions would reach training rows
    res = _invoke("eval", "--model", tiny_model_dir, "--adapter", run / "adapter", "--split", "question", "--test-units", "Q6,Q7",
                  "--no-plot", "--no-progress", "--out", tmp_path / "bad")
    assert res.exit_code == 2 and "trained on" in res.output


def test_part_validation_scores_the_validation_cells_and_no_test_row(run, tiny_model_dir, tmp_path):
    """``--part validation``: what a training setting is chosen on. Its rows pair a validation unit
    with a training or validation unit; not one of them has a test country or a test question."""
    split = json.loads((run / "split.json").read_text())
    val_c = {u.split(":", 1)[1] for u in split["val_unit_list"] if u.startswith("country:")}
    val_q = {u.split(":", 1)[1] for u in split["val_unit_list"] if u.startswith("question:")}
    out = tmp_path / "val"
    res = _invoke("eval", "--model", tiny_model_dir, "--adapter", run / "adapter", "--part", "validation", "--text-encoder", "tfidf",
                  "--no-plot", "--no-progress", "--bootstrap", "0", "--out", out)
    assert res.exit_code == 0, res.output
    names = sorted(p.name for p in out.glob("eval-*.json"))
    assert names and all("@validation-unseen_" in n for n in names)
    seen = set()
    for name in names:
        r = json.loads((out / name).read_text())
        assert r["cell"].startswith("validation/") and r["split"]["part"] == "validation"
        for p in r["predictions"]:
            assert p["group"] not in {"United States", "Thailand"} and p["item_id"] not in {"Q2", "Q5", "Q9"}
            assert p["group"] in val_c or p["item_id"] in val_q  # a validation row, never a training row
            seen.add(r["cell"])
    assert "validation/unseen_questions" in seen
    assert json.loads((out / "summary.json").read_text())["part"] == "validation"


def test_part_validation_without_validation_rows_is_one_error_line(tiny_model_dir, tmp_path):
    res = _invoke("eval", "--model", tiny_model_dir, "--data", "wvs-shares", "--countries", COUNTRIES, "--questions", QUESTIONS,
                  "--split", "country", "--test-units", "USA", "--part", "validation", "--no-progress", "--out", tmp_path / "x")
    assert res.exit_code == 2 and res.output.startswith("error: --part") and res.output.count("\n") == 1, res.output
    assert not (tmp_path / "x").exists()
    res = _invoke("eval", "--model", tiny_model_dir, "--part", "dev", "--out", tmp_path / "y")
    assert res.exit_code == 2 and "--part" in res.output and "validation" in res.output


def test_a_reference_that_scores_no_row_is_not_a_table_row():
    from pluralign.evaluation.report import summary_rows

    m = {"emd": 0.1, "accuracy": 0.5, "n": 10}
    res = {"dataset": {"kind": "distributional"}, "method": "persona", "metrics": m,
           "references": {"uniform": {"metrics": m}, "train_mean": {"metrics": {"emd": float("nan"), "n": 0}}}}
    _, rows = summary_rows([res], intervals=False)
    assert [r[0] for r in rows][1:] == ["ref:uniform"]
