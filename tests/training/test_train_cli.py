"""`pluralign train` → `pluralign eval --adapter --split-from` → `pluralign compare` on a tiny model folder."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from pluralign.cli.main import app

QUESTIONS = "Q1,Q2,Q3,Q4,Q5,Q6"


pytestmark = pytest.mark.usefixtures("one_thread")


def _invoke(args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _error_lines(res) -> list[str]:
    text = getattr(res, "stderr", "") or res.output
    return [l for l in text.splitlines() if l.startswith("error:")]


def test_train_eval_compare_round_trip(tmp_path, tiny_model_dir):
    run = tmp_path / "lora"
    common = ["--model", tiny_model_dir, "--data", "wvs-shares", "--countries", "USA,DEU,THA", "--questions", QUESTIONS,
              "--split", "question"]
    res = _invoke(["train", "--method", "lora", "--task", "distributional", *common, "--test-frac", "0.34",
                   "--steps", "3", "--batch-size", "4", "--save-steps", "2", "--logging-steps", "1", "--no-progress",
                   "--out", run])
    assert res.exit_code == 0, res.output
    for f in ("adapter", "train_config.json", "split.json", "log.jsonl", "train_summary.json", "checkpoints/checkpoint-2"):
        assert (run / f).exists(), f
    split = json.loads((run / "split.json").read_text())
    summary = json.loads((run / "train_summary.json").read_text())
    assert split["by"] == "question" and summary["steps"] == 3 and summary["eval_method"] == "persona"
    test_qs = set(split["test_unit_list"])
    assert test_qs and not test_qs & set(_train_questions(run))  # held-out questions never trained on

    # the same output folder is never clobbered
    res = _invoke(["train", "--method", "lora", "--task", "distributional", *common, "--steps", "3", "--no-progress", "--out", run])
    assert res.exit_code == 2 and len(_error_lines(res)) == 1

    ev = tmp_path / "eval"
    res = _invoke(["eval", "--model", tiny_model_dir, "--adapter", run / "adapter", "--split-from", run,
                   "--method", "persona", "--no-plot", "--no-progress", "--out", ev])
    assert res.exit_code == 0, res.output
    r = json.loads((ev / "eval-wvs-shares-persona.json").read_text())
    assert {p["item_id"] for p in r["predictions"]} == test_qs
    assert r["split"]["by"] == "question" and r["metrics"]["n"] == split["sizes"]["test"]

    base = tmp_path / "eval-base"
    res = _invoke(["eval", "--model", tiny_model_dir, "--split-from", run, "--method", "vanilla,persona",
                   "--no-plot", "--no-progress", "--out", base])
    assert res.exit_code == 0, res.output
    res = _invoke(["compare", ev, base, "--out", tmp_path / "table.md"])
    assert res.exit_code == 0, res.output
    table = (tmp_path / "table.md").read_text()
    rows = [ln.split("|")[1].strip() for ln in table.splitlines()[2:]]
    # 3 results and the references of held-out questions: uniform and the text-similarity one; train_mean has
    # no training row on a held-out question, so it scores no row and is not a row of nan
    assert "| method | emd | jsd |" in table
    assert rows == ["lora:persona", "eval-base:persona", "eval-base:vanilla", "ref:uniform", "ref:text_knn"]


def _train_questions(run):
    from pluralign.training import TrainConfig, load_split

    cfg = TrainConfig(**json.loads((run / "train_config.json").read_text()))
    _, sp = load_split(cfg)
    return {e.item_id for e in sp.train.examples}


@pytest.mark.parametrize(
    "args, field",
    [
        (["--method", "qlora"], "method"),
        (["--task", "ranking"], "task"),
        (["--stage", "ppo"], "stage"),
        (["--steps", "0"], "steps"),
        (["--task", "individual", "--data", "wvs-shares"], "task"),
    ],
)
def test_bad_input_is_one_error_line(tmp_path, args, field):
    res = _invoke(["train", *args, "--model", tmp_path / "missing-model", "--out", tmp_path / "x"])
    assert res.exit_code == 2, res.output
    errs = _error_lines(res)
    assert len(errs) == 1 and "Traceback" not in res.output, res.output
    assert field in errs[0]


def test_resume_without_a_run_is_an_error(tmp_path):
    res = _invoke(["train", "--method", "lora", "--out", tmp_path / "none", "--resume"])
    assert res.exit_code == 2 and "nothing to resume" in _error_lines(res)[0]


def test_compare_rejects_mixed_kinds_and_missing_files(tmp_path):
    res = _invoke(["compare", tmp_path / "nope.json"])
    assert res.exit_code == 2 and len(_error_lines(res)) == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    res = _invoke(["compare", empty])
    assert res.exit_code == 2 and "eval-" in _error_lines(res)[0]


def test_config_file_sets_defaults_and_flags_win(tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"method": "qlora", "steps": 3}))
    res = _invoke(["train", "--config", cfg, "--out", tmp_path / "x"])
    assert res.exit_code == 2 and "qlora" in _error_lines(res)[0]  # the file's method was used
    cfg.write_text(json.dumps({"method": "qlora", "task": "ranking"}))
    res = _invoke(["train", "--config", cfg, "--method", "lora", "--out", tmp_path / "x"])
    assert res.exit_code == 2 and "ranking" in _error_lines(res)[0]  # --method won, task came from the file
    cfg.write_text(json.dumps({"methd": "lora"}))
    res = _invoke(["train", "--config", cfg, "--out", tmp_path / "x"])
    assert res.exit_code == 2 and "methd" in _error_lines(res)[0]


def test_dpo_stage_continues_an_sft_adapter(tmp_path, tiny_model_dir):
    common = ["--model", tiny_model_dir, "--data", "wvs-shares", "--countries", "USA,DEU,THA", "--questions", QUESTIONS,
              "--split", "question", "--task", "distributional", "--batch-size", "4", "--save-steps", "0", "--logging-steps", "1", "--no-progress"]
    res = _invoke(["train", "--method", "lora", *common, "--steps", "2", "--out", tmp_path / "sft"])
    assert res.exit_code == 0, res.output
    res = _invoke(["train", "--method", "cuma", "--stage", "dpo", *common, "--steps", "2",
                   "--init-adapter", tmp_path / "sft" / "adapter", "--out", tmp_path / "bad"])
    assert res.exit_code == 2 and "init-adapter" in _error_lines(res)[0]
    res = _invoke(["train", "--method", "lora", "--stage", "dpo", *common, "--steps", "3", "--lr", "1e-2",
                   "--init-adapter", tmp_path / "sft" / "adapter", "--out", tmp_path / "dpo"])
    assert res.exit_code == 0, res.output
    logs = [json.loads(l) for l in (tmp_path / "dpo" / "log.jsonl").read_text().splitlines()]
    dpo = [l["dpo_loss"] for l in logs if "dpo_loss" in l]
    assert abs(dpo[0] - 0.6931) < 2e-3  # the SFT adapter is the reference: policy == reference at step 1
    assert (tmp_path / "dpo" / "adapter" / "adapter_config.json").exists()
