"""``evaluate_run(EvalRunConfig)``: the whole eval run from Python, the files ``pluralign eval`` writes."""

from __future__ import annotations

import dataclasses
import inspect
import json

import pytest
from typer.testing import CliRunner

from pluralign.errors import PluralignError
from pluralign.evaluation.run import EvalRunConfig, adapter_run_record, evaluate_run, read_split_record

SUMMARY_KEYS = {"results", "table", "differences", "reference_settings", "readout_agreement", "part"}


def _cfg(model_dir, out, **kw):
    return EvalRunConfig(model=str(model_dir), data="wvs-shares", split="country", test_units="USA,CHN", max_items=3,
                         out=out, progress=False, **kw)


def test_evaluate_run_writes_what_the_cli_writes(tiny_model_dir, tmp_path):
    lib = evaluate_run(_cfg(tiny_model_dir, tmp_path / "lib", method="vanilla,persona"))
    names = {"eval-wvs-shares-vanilla.json", "eval-wvs-shares-persona.json", "summary.json", "summary.png"}
    assert {p.name for p in (tmp_path / "lib").iterdir()} == names
    summary = json.loads((tmp_path / "lib" / "summary.json").read_text())
    assert set(summary) == SUMMARY_KEYS and summary == json.loads(json.dumps(lib.summary))
    assert summary["results"] == [str(tmp_path / "lib" / f"eval-wvs-shares-{m}.json") for m in ("vanilla", "persona")]
    assert [r["method"] for r in lib.results] == ["vanilla", "persona"] and list(lib.tables) == [None]
    res = json.loads((tmp_path / "lib" / "eval-wvs-shares-persona.json").read_text())
    assert res["schema"] == "pluralign.eval/1" and sorted(res["dataset"]["groups"]) == ["China", "United States"]
    assert res["split"]["from"] == "flags" and res["split"]["trained_rows_in_test"] is None
    # the same run through the CLI: the same files, the same table
    from pluralign.cli.main import app

    r = CliRunner().invoke(app, ["eval", "--model", str(tiny_model_dir), "--data", "wvs-shares", "--split", "country",
                                 "--test-units", "USA,CHN", "--max-items", "3", "--out", str(tmp_path / "cli"), "--no-progress",
                                 "--method", "vanilla,persona"])
    assert r.exit_code == 0, r.output
    assert {p.name for p in (tmp_path / "cli").iterdir()} == names
    cli = json.loads((tmp_path / "cli" / "summary.json").read_text())
    assert set(cli) == SUMMARY_KEYS
    assert cli["table"] == summary["table"] and cli["differences"]["header"] == summary["differences"]["header"]
    assert "| vanilla |" in r.stdout


def test_evaluate_run_lists_in_either_form_and_two_way_cells(tiny_model_dir, tmp_path):
    res = evaluate_run(EvalRunConfig(model=str(tiny_model_dir), data="wvs-shares", split="country,question",
                                     test_units=["USA", "CHN"], countries=["USA", "CHN", "DEU", "THA", "GBR"], test_questions="Q2,Q5",
                                     questions=[f"Q{i}" for i in range(1, 9)], method="vanilla", out=tmp_path / "o", progress=False,
                                     plot=False, bootstrap=0))
    assert set(res.tables) == {"unseen_questions", "unseen_countries", "unseen_both"}
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert set(summary) == SUMMARY_KEYS | {"cells"} and set(summary["cells"]) == set(res.tables)
    assert not (tmp_path / "o" / "summary.png").exists()
    assert all(p.endswith(".json") and "@unseen_" in p for p in summary["results"])


def test_bad_settings_fail_before_the_model_loads(tmp_path):
    with pytest.raises(PluralignError, match="unknown scoring") as e:
        evaluate_run(EvalRunConfig(model="no/such/model", scoring="magic", out=tmp_path / "o"))
    assert e.value.field == "scoring"
    with pytest.raises(PluralignError, match="unknown value 'telepathy'"):
        evaluate_run(EvalRunConfig(model="no/such/model", readout="logprob,telepathy", out=tmp_path / "o"))
    with pytest.raises(PluralignError, match="no split.json") as e:
        evaluate_run(EvalRunConfig(model="no/such/model", split_from=tmp_path, out=tmp_path / "o"))
    assert e.value.field == "split_from"
    with pytest.raises(PluralignError, match="soft prompt not found") as e:  # read from pluralign.adapters before the model loads
        evaluate_run(EvalRunConfig(model="no/such/model", soft_prompt=tmp_path, out=tmp_path / "o"))
    assert e.value.field == "soft_prompt"
    assert not (tmp_path / "o").exists()


def test_chosen_settings():
    assert EvalRunConfig().chosen() == set()
    assert EvalRunConfig(data="wvs-probe", seed=0, chat_template=False).chosen() == {"data", "chat_template"}
    assert EvalRunConfig(data="wvs-probe", explicit={"seed"}).chosen() == {"seed"}  # as the CLI says: flags given, even at their default


def test_run_records(tmp_path):
    rec = {"data": "wvs-shares", "by": "country", "test_frac": 0.2, "seed": 3, "test_units": ["THA"], "eval_method": "persona",
           "labels": "digits", "chat_template": False}
    (tmp_path / "run" / "adapter").mkdir(parents=True)
    (tmp_path / "run" / "split.json").write_text(json.dumps(rec))
    got = read_split_record(tmp_path / "run")
    assert got["seed"] == 3 and got["test_units"] == ["THA"] and got["countries"] == [] and got["val_frac"] == 0.0
    assert got["file"] == str(tmp_path / "run" / "split.json") and got["kind"] is None
    # an adapter with no record of its own: its run folder's split.json
    assert adapter_run_record(tmp_path / "run" / "adapter")["eval_method"] == "persona"
    # the adapter's record wins, its train_config filling the prompt format of an old run
    (tmp_path / "run" / "adapter" / "adapter_config.json").write_text(json.dumps(
        {"extra": {"split": {k: v for k, v in {**rec, "seed": 5}.items() if k not in ("eval_method", "labels")}, "train_config": {"profile_prompt": False, "labels": "letters"}}}))
    got = adapter_run_record(tmp_path / "run" / "adapter")
    assert (got["seed"], got["eval_method"], got["labels"]) == (5, "vanilla", "letters")
    assert adapter_run_record(tmp_path / "elsewhere") is None
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "split.json").write_text(json.dumps({"data": "x"}))
    with pytest.raises(PluralignError, match="malformed split record"):
        read_split_record(tmp_path / "bad")


def test_eval_flags_are_the_config_fields():
    """``pluralign eval``'s options are EvalRunConfig's fields, with their defaults and help texts."""
    from pluralign.cli.evaluate import eval_cmd

    fields = {f.name: f for f in dataclasses.fields(EvalRunConfig) if f.metadata.get("cli", True)}
    params = {n: p for n, p in inspect.signature(eval_cmd).parameters.items() if n != "ctx"}
    assert set(params) == set(fields)
    for name, p in params.items():
        f = fields[name]
        assert p.default.default == f.default, name
        assert p.default.help == f.metadata["help"], name


def test_generate_eval_replays_a_runs_split_through_the_run_record(tmp_path, tiny_model_dir):
    """``generate-eval --split-from RUN`` reads the run's split.json as ``eval --split-from`` does
    (read_split_record) and scores that run's held-out part."""
    from pathlib import Path

    from pluralign.cli.main import app

    fix = Path(__file__).resolve().parents[1] / "fixtures" / "data" / "blend"
    inv = lambda *a: CliRunner().invoke(app, [str(x) for x in a])  # noqa: E731
    res = inv("train", "--model", tiny_model_dir, "--data", f"blend:{fix}", "--method", "lora", "--test-frac", "0.3", "--batch-size", "2",
              "--save-steps", "0", "--no-progress", "--completion-max-length", "8", "--stage", "sft", "--steps", "1", "--out", tmp_path / "sft")
    assert res.exit_code == 0, res.output
    split = json.loads((tmp_path / "sft" / "split.json").read_text())
    out = tmp_path / "ge.json"
    res = inv("generate-eval", "--adapter", tmp_path / "sft" / "adapter", "--split-from", tmp_path / "sft", "--no-judge",
              "--max-new-tokens", "2", "--batch-size", "4", "--out", out)
    assert res.exit_code == 0, res.output
    rep = json.loads(out.read_text())
    assert rep["split"] == split["by"] and {o["unit"] for o in rep["outputs"]} <= set(split["test_unit_list"])
    res = inv("generate-eval", "--adapter", tmp_path / "sft" / "adapter", "--split-from", tmp_path, "--no-judge", "--out", out)
    assert res.exit_code == 2 and "--split-from: no split.json in this folder" in res.output, res.output
