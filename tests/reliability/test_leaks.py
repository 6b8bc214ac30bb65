"""Leaks certified as clean (issue 27, class 7): test groups and their (group, item) cells never
reach a reference or a demonstration."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from pluralign.cli.main import app
from pluralign.data import GroupExample, Profile, SurveyDataset, SurveyItem, load_dataset
from pluralign.errors import PluralignError

QS = "Q1,Q2,Q3"
pytestmark = pytest.mark.usefixtures("one_thread")


def test_reference_data_leaves_out_the_test_groups(tiny_model_dir, tmp_path):
    out = tmp_path / "ev"
    res = CliRunner().invoke(app, ["eval", "--model", str(tiny_model_dir), "--data", "wvs-shares", "--questions", QS,
                                   "--split", "country", "--test-units", "USA", "--reference-data", "wvs-shares",
                                   "--method", "vanilla", "--bootstrap", "0", "--no-plot", "--no-progress", "--out", str(out)])
    assert res.exit_code == 0, res.output
    r = json.loads((out / "eval-wvs-shares-vanilla.json").read_text())
    assert r["split"]["reference_data"]["test_group_rows_left_out"] == 3  # USA's three answers
    ds = load_dataset("wvs-shares").filter(questions=QS.split(","))
    others = {}
    for e in ds.examples:
        if e.group != "United States":
            others.setdefault(e.item_id, []).append(np.asarray(e.probs) / np.sum(e.probs))
    usa = {e.item_id: np.asarray(e.probs) / np.sum(e.probs) for e in ds.examples if e.group == "United States"}
    for p in r["predictions"]:
        q = p["item_id"]
        # train_mean is the other countries' mean, never one that includes the USA's own answer
        want = np.mean(others[q], axis=0)
        assert not np.allclose(want, np.mean(others[q] + [usa[q]], axis=0))
    tm = r["references"]["train_mean"]["metrics"]["emd"]
    from pluralign.evaluation import metrics as M

    exp = np.mean([M.emd(np.mean(others[q], axis=0), usa[q], True) for q in usa])
    assert tm == pytest.approx(exp, abs=1e-4)


def test_fewshot_never_shows_the_scored_cell_of_group_data():
    from pluralign.evaluation.methods import get_method

    items = {f"Q{i}": SurveyItem(id=f"Q{i}", text=f"Question {i}?", options=("a", "b", "c")) for i in range(1, 5)}
    exs = [GroupExample("Japan", Profile(country="Japan"), q, (0.1, 0.1, 0.8) if q == "Q1" else (0.8, 0.1, 0.1)) for q in items]
    ds = SurveyDataset("g", "distributional", items, exs, source="g")
    m = get_method("fewshot", k=3, seed=0).fit(ds)  # split none: the training part is the test part
    for e in ds.examples:
        demos = m._demos(e)
        assert all(d.item_id != e.item_id for d in demos), e.item_id
    with pytest.raises(PluralignError):
        get_method("fewshot", k=3).fit(ds.subset([]))


def test_a_mistyped_data_folder_is_an_error_not_a_fallback(monkeypatch, tmp_path):
    from pluralign.paths import shared_data_dir

    monkeypatch.setenv("PLURALIGN_DATA", str(tmp_path / "nope"))
    with pytest.raises(PluralignError, match="PLURALIGN_DATA"):
        shared_data_dir()


def test_an_adapter_on_new_data_replays_only_its_prompt_format(tiny_model_dir, tmp_path):
    """`eval --adapter RUN/adapter --data new.yaml --split none` (issue 27, class 9): the run's test
    units are not replayed onto the new data; the trained-rows check still runs."""
    run = tmp_path / "run"
    r = CliRunner().invoke(app, ["train", "--method", "lora", "--task", "distributional", "--model", str(tiny_model_dir),
                                 "--data", "wvs-shares", "--countries", "USA,DEU,THA", "--questions", QS, "--split", "country",
                                 "--test-units", "THA", "--steps", "1", "--batch-size", "4", "--save-steps", "0",
                                 "--no-progress", "--out", str(run)])
    assert r.exit_code == 0, r.output
    survey = tmp_path / "new.yaml"
    survey.write_text(
        "items:\n"
        "  - {id: fam, text: \"How important is family in your life?\", options: [Very important, Rather important, Not very important, Not at all important]}\n"
        "groups:\n"
        "  - {id: FRA, profile: {country: France}, distributions: {fam: [0.8, 0.15, 0.04, 0.01]}}\n"
        "  - {id: ITA, profile: {country: Italy}, distributions: {fam: [0.85, 0.1, 0.04, 0.01]}}\n")
    out = tmp_path / "ev"
    r = CliRunner().invoke(app, ["eval", "--model", str(tiny_model_dir), "--adapter", str(run / "adapter"), "--data", str(survey),
                                 "--split", "none", "--reference-data", "wvs-shares", "--bootstrap", "0", "--no-plot",
                                 "--no-progress", "--out", str(out)])
    assert r.exit_code == 0, r.output
    res = json.loads(next(out.glob("eval-*.json")).read_text())
    assert sorted(res["dataset"]["groups"]) == ["France", "Italy"] and res["method"] == "persona"
    assert res["split"]["trained_rows_in_test"] == 0 and "train_mean" in res["references"]
