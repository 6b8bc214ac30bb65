"""`pluralign eval --adapter RUN/adapter` scores the run's held-out part with the run's prompt format by
default, and refuses selections that would score training rows (issue 8, "correct by default")."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from pluralign.cli.main import app

QUESTIONS = "Q1,Q2,Q3,Q4,Q5,Q6"

pytestmark = pytest.mark.usefixtures("one_thread")


def _invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _errors(res) -> list[str]:
    text = getattr(res, "stderr", "") or res.output
    return [l for l in text.splitlines() if l.startswith("error:")]


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_model_dir):
    """A LoRA run on 3 countries x 6 questions, questions held out, vanilla prompts, letter labels, no chat template."""
    out = tmp_path_factory.mktemp("run") / "lora"
    res = _invoke(
        "train", "--method", "lora", "--task", "distributional", "--model", tiny_model_dir, "--data", "wvs-shares",
        "--countries", "USA,DEU,THA", "--questions", QUESTIONS, "--split", "question", "--test-frac", "0.34",
        "--no-profile-prompt", "--labels", "letters", "--no-chat-template",
        "--steps", "1", "--batch-size", "4", "--save-steps", "0", "--no-progress", "--out", out,
    )
    assert res.exit_code == 0, res.output
    return out


def _eval(tiny_model_dir, out, *extra):
    return _invoke("eval", "--model", tiny_model_dir, "--no-plot", "--no-progress", "--out", out, *extra)


def test_adapter_alone_scores_its_runs_held_out_part_with_its_prompt_format(run, tiny_model_dir, tmp_path):
    split = json.loads((run / "split.json").read_text())
    test_qs = set(split["test_unit_list"])
    out = tmp_path / "ev"
    res = _eval(tiny_model_dir, out, "--adapter", run / "adapter")
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.glob("eval-*.json")) == ["eval-wvs-shares-vanilla.json"]  # the run's method only
    r = json.loads((out / "eval-wvs-shares-vanilla.json").read_text())
    assert {p["item_id"] for p in r["predictions"]} == test_qs
    assert sorted(r["dataset"]["groups"]) == ["Germany", "Thailand", "United States"]
    assert r["config"]["labels"] == "letters" and r["config"]["chat_template"] is False
    assert r["split"]["by"] == "question" and r["split"]["from"] == "adapter"
    assert r["split"]["trained_rows_in_test"] == 0 and r["split"]["test"] == split["sizes"]["test"]
    assert r["split"]["countries"] == ["USA", "DEU", "THA"] and r["split"]["labels"] == "letters"


def test_adapter_record_travels_with_the_adapter_folder(run, tiny_model_dir, tmp_path):
    import shutil

    moved = tmp_path / "elsewhere" / "adapter"  # no split.json next to it: adapter_config.json extra.split is used
    shutil.copytree(run / "adapter", moved)
    res = _eval(tiny_model_dir, tmp_path / "ev", "--adapter", moved)
    assert res.exit_code == 0, res.output
    r = json.loads((tmp_path / "ev" / "eval-wvs-shares-vanilla.json").read_text())
    assert r["split"]["by"] == "question" and r["split"]["trained_rows_in_test"] == 0


@pytest.mark.parametrize(
    "args, field",
    [
        (["--split", "country", "--test-units", "USA"], "split"),  # USA's training questions would be scored
        (["--split", "none"], "split"),
        (["--seed", "2"], "seed"),  # another hash: some training questions land in the test part
        (["--data", "wvs-shares", "--countries", "USA,DEU,THA,CHN", "--split", "country", "--test-units", "CHN,USA"], "countries"),
    ],
)
def test_selections_that_score_training_rows_are_refused(run, tiny_model_dir, tmp_path, args, field):
    out = tmp_path / "ev"
    res = _eval(tiny_model_dir, out, "--adapter", run / "adapter", *args)
    assert res.exit_code == 2, res.output
    errs = _errors(res)
    assert len(errs) == 1 and "trained on" in errs[0] and f"field '{field}'" in errs[0], res.output
    assert "Traceback" not in res.output and not out.exists()


def test_an_explicit_selection_without_training_rows_is_allowed(run, tiny_model_dir, tmp_path):
    """Another country on the run's held-out questions: never trained on, so it is scored."""
    test_qs = json.loads((run / "split.json").read_text())["test_unit_list"]
    out = tmp_path / "ev"
    res = _eval(tiny_model_dir, out, "--adapter", run / "adapter", "--countries", "CHN")
    assert res.exit_code == 0, res.output
    r = json.loads((out / "eval-wvs-shares-vanilla.json").read_text())
    assert r["dataset"]["groups"] == ["China"] and {p["item_id"] for p in r["predictions"]} == set(test_qs)
    assert r["split"]["explicit"] == ["countries"] and r["split"]["trained_rows_in_test"] == 0


@pytest.mark.parametrize(
    "args, field",
    [(["--labels", "digits"], "labels"), (["--method", "persona"], "method"), (["--method", "vanilla,persona"], "method")],
)
def test_another_prompt_format_than_the_runs_is_refused(run, tiny_model_dir, tmp_path, args, field):
    res = _eval(tiny_model_dir, tmp_path / "ev", "--adapter", run / "adapter", *args)
    assert res.exit_code == 2, res.output
    errs = _errors(res)
    assert len(errs) == 1 and f"--{field}: " in errs[0] and "trained" in errs[0], res.output


def test_the_runs_own_method_and_labels_are_accepted_explicitly(run, tiny_model_dir, tmp_path):
    res = _eval(tiny_model_dir, tmp_path / "ev", "--adapter", run / "adapter", "--method", "vanilla", "--labels", "letters")
    assert res.exit_code == 0, res.output
    res = _eval(tiny_model_dir, tmp_path / "ev2", "--adapter", run / "adapter", "--chat-template")
    assert res.exit_code == 0 and "warning:" in res.output and "chat template" in res.output, res.output


def test_split_from_applies_the_runs_prompt_format(run, tiny_model_dir, tmp_path):
    out = tmp_path / "base"
    res = _eval(tiny_model_dir, out, "--split-from", run)  # base model on the run's split, as the run prompts
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.glob("eval-*.json")) == ["eval-wvs-shares-vanilla.json"]
    r = json.loads((out / "eval-wvs-shares-vanilla.json").read_text())
    assert r["config"]["labels"] == "letters" and r["config"]["chat_template"] is False
    assert r["split"]["from"] == "split_from" and r["split"]["trained_rows_in_test"] is None
    # without an adapter, other methods are a legitimate baseline
    res = _eval(tiny_model_dir, tmp_path / "base2", "--split-from", run, "--method", "vanilla,persona")
    assert res.exit_code == 0, res.output


def test_auto_split_is_country_for_group_data_in_train_and_eval(tmp_path, tiny_model_dir):
    out = tmp_path / "auto"
    res = _invoke(
        "train", "--method", "lora", "--task", "distributional", "--model", tiny_model_dir, "--data", "wvs-shares",
        "--countries", "USA,DEU,THA", "--questions", "Q1,Q2,Q3", "--test-units", "THA",
        "--steps", "1", "--batch-size", "4", "--save-steps", "0", "--no-progress", "--out", out,
    )
    assert res.exit_code == 0, res.output
    assert json.loads((out / "split.json").read_text())["by"] == "country"
    res = _eval(tiny_model_dir, tmp_path / "ev", "--data", "wvs-shares", "--countries", "USA,DEU,THA", "--questions", "Q1,Q2,Q3",
                "--test-units", "THA", "--method", "vanilla")
    assert res.exit_code == 0, res.output
    r = json.loads((tmp_path / "ev" / "eval-wvs-shares-vanilla.json").read_text())
    assert r["split"]["by"] == "country" and r["dataset"]["groups"] == ["Thailand"]


def test_a_runs_units_with_commas_are_not_split_again():
    """Profile keys hold commas ("Greek, Modern"): the run's test units reach the split as they were."""
    from pluralign.evaluation.run import SELECTION
    from pluralign.evaluation.run import apply_record as _apply_record
    from pluralign.evaluation.run import split_csv as _csv

    units = ["country=Cyprus|language=Greek, Modern", "country=Japan"]
    a = {"test_units": None, "countries": None, "questions": None}
    assert _apply_record(a, {"test_units": units}, set(), {"test_units": "test_units"}) == []
    assert _csv(a["test_units"]) == units
    a = {"test_units": "country=Japan", "countries": None, "questions": None}  # explicit, different: reported
    assert _apply_record(a, {"test_units": units}, {"test_units"}, {"test_units": "test_units"}) == ["test_units"]
    assert "test_units" in SELECTION
