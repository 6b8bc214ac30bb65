"""``pluralign softprompt`` end to end on a tiny model folder; bad input exits 2 with one error line."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from pluralign.cli.main import app

runner = CliRunner()


def test_softprompt_cli_saves_a_prompt_that_eval_applies(tiny_model_dir, tmp_path):
    out = tmp_path / "sp"
    r = runner.invoke(app, ["softprompt", "--country", "USA", "--model", str(tiny_model_dir), "--tokens", "2", "--pop", "4",
                            "--gens", "1", "--out", str(out), "--no-progress", "--batch-size", "48"])
    assert r.exit_code == 0, r.output
    res = json.loads((out / "results.json").read_text())
    assert res["search"]["loss"] <= res["search"]["initial_best"]
    assert {"naive", "in-context"} <= set(res) and res["country"]["code"] == "USA"
    meta = json.loads((out / "prompt.json").read_text())
    assert meta["tokens"] == 2 and meta["hidden_size"] == 64 and meta["country"] == "USA"
    assert "| target |" in r.output.replace("|target|", "| target |") or "target" in r.output
    # resume with more generations continues the checkpoint
    r2 = runner.invoke(app, ["softprompt", "--country", "USA", "--model", str(tiny_model_dir), "--tokens", "2", "--pop", "4",
                             "--gens", "2", "--out", str(out), "--no-progress", "--resume"])
    assert r2.exit_code == 0, r2.output
    assert len((out / "log.jsonl").read_text().splitlines()) == 3
    # pluralign eval --soft-prompt applies it (one question keeps it quick)
    r3 = runner.invoke(app, ["eval", "--model", str(tiny_model_dir), "--soft-prompt", str(out), "--method", "vanilla",
                             "--test-units", "USA", "--max-items", "1", "--no-plot", "--no-progress", "--out", str(tmp_path / "ev")])
    assert r3.exit_code == 0, r3.output
    evres = json.loads((tmp_path / "ev" / "eval-wvs-shares-vanilla.json").read_text())
    assert evres.get("soft_prompt") == str(out)


@pytest.mark.parametrize(
    "args, msg",
    [
        (["--country", "Atlantis"], "no Hofstede scores"),
        (["--country", "USA", "--optimizer", "adam"], "unknown optimizer"),
        (["--country", "USA", "--constants", "FOO=3"], "unknown dimension"),
    ],
)
def test_bad_input_exits_2(args, msg, tmp_path):
    r = runner.invoke(app, ["softprompt", *args, "--model", "/nonexistent", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2
    assert msg in r.output and "Traceback" not in r.output


def test_eval_with_mismatched_prompt_exits_2(tiny_model_dir, tmp_path):
    import torch

    from pluralign.blackbox import save_soft_prompt

    save_soft_prompt(tmp_path / "wide", torch.randn(2, 32), {"model": "other"})
    r = runner.invoke(app, ["eval", "--model", str(tiny_model_dir), "--soft-prompt", str(tmp_path / "wide"), "--method", "vanilla",
                            "--test-units", "USA", "--max-items", "1", "--no-plot", "--no-progress", "--out", str(tmp_path / "ev")])
    assert r.exit_code == 2 and "hidden size 32" in r.output


def test_baseline_flag(tiny_model_dir, tmp_path):
    r = runner.invoke(app, ["softprompt", "--country", "SAU", "--baseline", "--model", str(tiny_model_dir), "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "baseline.json").read_text())
    assert "search" not in res and set(res["country"]["scores"]) == {"LTO", "IVR"}
    assert "no score for PDI" in r.output
