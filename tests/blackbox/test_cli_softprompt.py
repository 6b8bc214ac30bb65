"""``pluralign softprompt`` end to end on a tiny model folder; bad input exits 2 with one error line."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from pluralign.cli.main import app

runner = CliRunner()
#: two calibration countries instead of the default twelve: the tiny tokenizer makes every VSM prompt long
CAL = ["--calibration-countries", "GBR,JPN"]


def test_softprompt_cli_saves_a_prompt_that_eval_applies(tiny_model_dir, tmp_path):
    out = tmp_path / "sp"
    r = runner.invoke(app, ["softprompt", "--country", "USA", "--model", str(tiny_model_dir), "--tokens", "2", "--pop", "4",
                            "--gens", "1", "--out", str(out), "--no-progress", "--batch-size", "48", *CAL])
    assert r.exit_code == 0, r.output
    res = json.loads((out / "results.json").read_text())
    assert res["search"]["loss"] <= res["search"]["initial_best"]
    assert {"naive", "in-context"} <= set(res) and res["country"]["code"] == "USA"
    # the default objective (diff) on the two search wordings; every convention on every wording, reworded2 held out
    ob = res["objective"]
    assert ob["name"] == res["search"]["objective"] == "diff" and ob["search_wordings"] == ["original", "reworded"]
    assert ob["held_out_wordings"] == ["reworded2"] and "unknown" in ob["seed_paper_convention"]
    assert ob["calibration_countries"] == ["GBR", "JPN"]
    wd = res["wordings"]
    assert set(wd) == {"original", "reworded", "reworded2"} and not wd["reworded2"]["searched"] and wd["reworded"]["searched"]
    for w in wd.values():
        assert set(w["naive"]) == set(w["prompt"]) == {"l1-c50", "l1-calibrated", "diff"}
    # the searched loss is the objective's mean over the search wordings, as read out again in fp32
    mean = (wd["original"]["prompt"]["diff"] + wd["reworded"]["prompt"]["diff"]) / 2
    assert res["search"]["loss"] == pytest.approx(mean, abs=1e-3)
    assert res["naive"]["loss"] == pytest.approx((wd["original"]["naive"]["diff"] + wd["reworded"]["naive"]["diff"]) / 2)
    assert "held-out wording reworded2" in r.output and "Every convention beside the others" in r.output
    assert "seed paper's convention: unknown" in r.output
    meta = json.loads((out / "prompt.json").read_text())
    assert meta["tokens"] == 2 and meta["hidden_size"] == 64 and meta["country"] == "USA"
    assert meta["objective"]["objective"] == "diff" and meta["objective"]["wordings"] == ["original", "reworded"]
    # resuming with another objective is refused (the checkpoint records it)
    r1 = runner.invoke(app, ["softprompt", "--country", "USA", "--model", str(tiny_model_dir), "--tokens", "2", "--pop", "4",
                             "--gens", "2", "--out", str(out), "--no-progress", "--resume", "--objective", "l1-c50", *CAL])
    assert r1.exit_code == 2 and "objective" in r1.output and "Traceback" not in r1.output
    assert "| target |" in r.output.replace("|target|", "| target |") or "target" in r.output
    # resume with more generations continues the checkpoint
    r2 = runner.invoke(app, ["softprompt", "--country", "USA", "--model", str(tiny_model_dir), "--tokens", "2", "--pop", "4",
                             "--gens", "2", "--out", str(out), "--no-progress", "--resume", *CAL])
    assert r2.exit_code == 0, r2.output
    assert len((out / "log.jsonl").read_text().splitlines()) == 3
    # pluralign eval --soft-prompt applies it (one question keeps it quick)
    r3 = runner.invoke(app, ["eval", "--model", str(tiny_model_dir), "--soft-prompt", str(out), "--method", "vanilla",
                             "--test-units", "USA", "--max-items", "1", "--no-plot", "--no-progress", "--out", str(tmp_path / "ev")])
    assert r3.exit_code == 0, r3.output
    evres = json.loads((tmp_path / "ev" / "eval-wvs-shares-vanilla.json").read_text())
    assert evres.get("soft_prompt") == str(out)


def test_a_bf16_search_reports_the_exact_fp32_loss_of_its_prompt(tiny_model_dir, tmp_path):
    """--autocast bf16: the search's objective is approximate; results.json reports the best prompt's
    fp32 loss (and what the search saw as search_loss), and the reworded check compares against it."""
    out = tmp_path / "sp"
    r = runner.invoke(app, ["softprompt", "--country", "USA", "--model", str(tiny_model_dir), "--tokens", "2", "--pop", "4",
                            "--gens", "1", "--out", str(out), "--no-progress", "--batch-size", "48", "--autocast", "bf16", *CAL])
    assert r.exit_code == 0, r.output
    doc = json.loads((out / "results.json").read_text())
    res = doc["search"]
    assert res["autocast"] == "bf16" and res["search_loss"] != res["loss"]
    assert "re-scored in fp32" in r.output
    from pluralign.blackbox.objective import Calibration, Objective, score_on_wordings
    from pluralign.blackbox.population import PopulationConfig
    from pluralign.adapters.softprompt import load_soft_prompt
    from pluralign.data.loaders.hofstede import country_target
    from pluralign.models import load_backbone

    model, tok = load_backbone(str(tiny_model_dir))
    x, _ = load_soft_prompt(out)
    sc = score_on_wordings(model, tok, x.float(), wordings=("original", "reworded"), cfg=PopulationConfig(tokens=2, batch_size=48))
    obj = Objective("diff", calibration=Calibration.from_dict(doc["calibration"]))
    exact = sum(float(obj.loss(sc["raw"][w][None], country_target("USA"), w)[0]) for w in ("original", "reworded")) / 2
    assert res["loss"] == pytest.approx(exact, abs=1e-4)


@pytest.mark.parametrize(
    "args, msg",
    [
        (["--country", "Atlantis"], "no Hofstede scores"),
        (["--country", "USA", "--optimizer", "adam"], "unknown optimizer"),
        (["--country", "USA", "--constants", "FOO=3"], "unknown dimension"),
        (["--country", "USA", "--objective", "l2"], "unknown objective"),
        (["--country", "USA", "--wordings", "reworded2"], "held-out wording"),
        (["--country", "USA", "--wordings", "original,klingon"], "unknown wording"),
        (["--country", "USA", "--wordings", ","], "names no wording"),
        (["--country", "USA", "--calibration-countries", "USA"], "names only the target"),
        (["--country", "USA", "--calibration-countries", "GBR,Atlantis"], "no Hofstede scores"),
    ],
)
def test_bad_input_exits_2(args, msg, tmp_path):
    r = runner.invoke(app, ["softprompt", *args, "--model", "/nonexistent", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2
    assert msg in r.output and "Traceback" not in r.output


def test_eval_with_mismatched_prompt_exits_2(tiny_model_dir, tmp_path):
    import torch

    from pluralign.adapters.softprompt import save_soft_prompt

    save_soft_prompt(tmp_path / "wide", torch.randn(2, 32), {"model": "other"})
    r = runner.invoke(app, ["eval", "--model", str(tiny_model_dir), "--soft-prompt", str(tmp_path / "wide"), "--method", "vanilla",
                            "--test-units", "USA", "--max-items", "1", "--no-plot", "--no-progress", "--out", str(tmp_path / "ev")])
    assert r.exit_code == 2 and "hidden size 32" in r.output


def test_baseline_flag(tiny_model_dir, tmp_path):
    r = runner.invoke(app, ["softprompt", "--country", "SAU", "--baseline", "--model", str(tiny_model_dir), "--out", str(tmp_path), *CAL])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "baseline.json").read_text())
    assert "search" not in res and set(res["country"]["scores"]) == {"LTO", "IVR"}
    assert "no score for PDI" in r.output
    # the baselines under every convention on every wording (only LTO and IVR compared)
    assert set(res["naive"]["readouts"]) == {"original", "reworded", "reworded2"}
    assert set(res["naive"]["readouts"]["reworded2"]) == {"l1-c50", "l1-calibrated", "diff"}


@pytest.mark.parametrize(
    "args, flag",
    [
        (["--subspace-dim", "-1"], "--subspace-dim"),
        (["--subspace-scale", "0"], "--subspace-scale"),
        (["--optimizer", "nsga2"], "--knowledge"),  # nsga2 without the knowledge objective
        (["--autocast", "fp8"], "--autocast"),
        (["--objective", "l2"], "--objective"),
        (["--wordings", "original,reworded2"], "--wordings"),
        (["--calibration-countries", "GBR,GBR"], "--calibration-countries"),
    ],
)
def test_bad_new_flags_give_one_error_line_before_the_model_loads(args, flag, tmp_path):
    r = runner.invoke(app, ["softprompt", "--country", "USA", *args, "--model", "/nonexistent", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2, r.output
    errors = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and flag in errors[0] and "Traceback" not in r.output
    assert "loading" not in r.output  # refused before any model loads


def test_nsga2_without_blend_data_exits_2_before_the_model_loads(tmp_path):
    empty = tmp_path / "data"
    empty.mkdir()
    r = runner.invoke(app, ["softprompt", "--country", "USA", "--optimizer", "nsga2", "--knowledge", "5", "--model", "/nonexistent",
                            "--out", str(tmp_path / "x")], env={"PLURALIGN_DATA": str(empty)})
    assert r.exit_code == 2, r.output
    errors = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "BLEnD annotations not found" in errors[0] and "loading" not in r.output


def test_nsga2_in_a_subspace_through_the_cli(tiny_model_dir, tmp_path):
    from tests.conftest import shared

    shared("blend_cultural_knowledge", "annotations")
    out = tmp_path / "nsga"
    r = runner.invoke(app, ["softprompt", "--country", "USA", "--optimizer", "nsga2", "--knowledge", "2", "--subspace-dim", "16",
                            "--model", str(tiny_model_dir), "--tokens", "1", "--pop", "4", "--gens", "0", "--out", str(out),
                            "--no-progress", "--batch-size", "48", *CAL])
    assert r.exit_code == 0, r.output
    res = json.loads((out / "results.json").read_text())
    assert res["search"]["subspace_dim"] == 16 and res["search"]["evaluations"] == 4
    doc = json.loads((out / "pareto.json").read_text())
    assert doc["search_questions"] == 2 and doc["heldout_questions"] == 2 and doc["points"]
    assert all({"loss", "search_accuracy", "heldout_accuracy", "scores"} <= set(p) for p in doc["points"])
    assert res["knowledge_before"]["n"] == 2 and "knowledge_after" in res
    assert (out / "pareto.safetensors").exists() and (out / "prompt.safetensors").exists()


def test_the_default_calibration_countries_of_the_cli_are_the_library_default():
    import inspect

    from pluralign.blackbox.objective import DEFAULT_CALIBRATION, DEFAULT_OBJECTIVE, DEFAULT_SEARCH_WORDINGS
    from pluralign.cli.softprompt import softprompt_cmd

    p = inspect.signature(softprompt_cmd).parameters
    assert p["calibration_countries"].default.default == ",".join(DEFAULT_CALIBRATION)
    assert p["objective"].default.default == DEFAULT_OBJECTIVE and p["wordings"].default.default == ",".join(DEFAULT_SEARCH_WORDINGS)


def test_the_target_is_left_out_of_the_calibration(tiny_model_dir, tmp_path):
    r = runner.invoke(app, ["softprompt", "--country", "JPN", "--baseline", "--model", str(tiny_model_dir), "--out", str(tmp_path),
                            "--calibration-countries", "GBR,JPN", "--no-reworded-check"])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "baseline.json").read_text())
    assert res["objective"]["calibration_countries"] == ["GBR"] and "left out of the calibration" in r.output
