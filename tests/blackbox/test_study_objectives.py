"""``scripts/softprompt_study.py`` with the objectives of issue 29: the settings are recorded, every
convention is read out on every wording, a folder made with another objective is refused, and a
summary from before issue 29 still reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import load_script

REPO = Path(__file__).resolve().parents[2]


def _study():
    return load_script("softprompt_study")


def test_a_study_searches_a_c_free_objective_and_reports_every_convention(tiny_model_dir, tmp_path, capsys):
    sp = _study()
    out = tmp_path / "sp"
    argv = ["--model", str(tiny_model_dir), "--countries", "USA,CHN", "--optimizers", "de", "--subspace-dims", "0", "--seeds", "0",
            "--tokens", "1", "--pop", "4", "--gens", "0", "--batch-size", "48", "--threads", "1", "--knowledge", "0",
            "--calibration-countries", "GBR,JPN", "--objective", "diff", "--wordings", "original,reworded", "--out", str(out)]
    s = sp.main(argv)
    assert s["settings"]["objective"] == "diff" and s["settings"]["wordings"] == ["original", "reworded"]
    assert s["settings"]["calibration"] == ["GBR", "JPN"] and [r["code"] for r in s["calibration"]["references"]] == ["GBR", "JPN"]
    run, b = s["runs"]["USA-de-d0-s0"], s["baselines"]["USA"]
    assert run["objective"] == "diff" and set(run["readouts"]) == set(run["raw"]) == {"original", "reworded", "reworded2"}
    assert set(run["held_out"]) == {"reworded2"} and set(run["reworded"]) == {"naive_loss", "loss", "kept"}
    # the searched loss is the objective's mean over the search wordings (re-read in fp32 on every wording)
    assert run["loss"] == pytest.approx((run["readouts"]["original"]["diff"] + run["readouts"]["reworded"]["diff"]) / 2, abs=1e-3)
    assert b["naive_loss"] == pytest.approx((b["readouts"]["naive"]["original"]["diff"] + b["readouts"]["naive"]["reworded"]["diff"]) / 2)
    # l1-calibrated: the model without a prompt has the same loss on every wording (each wording calibrated on its own)
    cal = {w: b["readouts"]["naive"][w]["l1-calibrated"] for w in ("original", "reworded", "reworded2")}
    assert max(cal.values()) - min(cal.values()) < 1e-9
    text = capsys.readouterr().out
    assert "Search objective: diff" in text and "Seed paper's convention: unknown" in text
    assert "Every convention beside the others, reworded2 wording (never searched)" in text
    assert "Between-country differences of the searched prompts" in text and "| de full | " in text
    assert f"| USA de full (n=1) | **{run['loss']:.2f}** |" in text  # specificity, own target in bold
    # the same folder with another objective (the default, l1-c50 on the original items): one error line, exit 2, nothing run
    with pytest.raises(SystemExit) as e:
        sp.main([a for a in argv if a not in ("--objective", "diff", "--wordings", "original,reworded")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("error: ") and "use another --out" in err and err.count("\n") == 1
    with pytest.raises(SystemExit) as e:
        sp.main([*argv[:-2], "--wordings", "original,reworded2", "--out", str(tmp_path / "other")])  # the later --wordings wins
    assert e.value.code == 2 and "held-out wording" in capsys.readouterr().err and not (tmp_path / "other").exists()
    # finished: nothing re-run, the summary unchanged
    assert sp.main(argv)["runs"]["USA-de-d0-s0"] == run


def test_a_summary_from_before_issue_29_still_reports(tmp_path, capsys):
    sp = _study()
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "summary.json").write_text((REPO / "docs" / "results" / "softprompt_study.json").read_text())
    s = sp.main(["--out", str(tmp_path / "old"), "--report"])
    text = capsys.readouterr().out
    assert "Search objective: l1-c50" in text and "fixed constants C = 50" in text
    usa = [r for r in s["runs"].values() if r["code"] == "USA" and r["optimizer"] == "de" and r["subspace_dim"] == 0]
    mean = sum(r["loss"] for r in usa) / len(usa)
    assert f"| USA de full (n={len(usa)}) | **{mean:.2f}** |" in text
    assert "Every convention beside the others" not in text  # the old runs hold no per-wording scores
    assert json.loads((tmp_path / "old" / "summary.json").read_text())["settings"] == {"model": "smollm2-135m", "tokens": 10,
                                                                                         "pop": 16, "gens": 24}


def test_a_study_from_before_issue_29_continues_with_the_old_objective(tiny_model_dir, tmp_path):
    """The default (l1-c50 on the original items) continues a summary that has no objective settings,
    no calibration and no read-outs: its finished search is kept, a new one gets every read-out."""
    sp = _study()
    out = tmp_path / "old"
    argv = ["--model", str(tiny_model_dir), "--countries", "USA", "--optimizers", "de", "--subspace-dims", "0", "--tokens", "1",
            "--pop", "4", "--gens", "0", "--batch-size", "48", "--threads", "1", "--knowledge", "0", "--calibration-countries", "GBR",
            "--out", str(out)]
    s = sp.main([*argv, "--seeds", "0"])
    assert s["settings"]["objective"] == "l1-c50" and s["settings"]["wordings"] == ["original"]
    f = out / "summary.json"
    old = json.loads(f.read_text())
    old["settings"] = {k: old["settings"][k] for k in ("model", "tokens", "pop", "gens")}
    del old["calibration"]
    for b in old["baselines"].values():
        for k in ("readouts", "icl_raw"):
            del b[k]
    for r in old["runs"].values():
        for k in ("raw", "readouts", "mass_by_wording", "held_out", "objective", "wordings"):
            del r[k]
    f.write_text(json.dumps(old))
    s = sp.main([*argv, "--seeds", "0,1"])
    assert s["runs"]["USA-de-d0-s0"] == old["runs"]["USA-de-d0-s0"]  # kept as it was
    new = s["runs"]["USA-de-d0-s1"]
    assert set(new["readouts"]) == {"original", "reworded", "reworded2"} and new["objective"] == "l1-c50"
    assert s["baselines"]["USA"]["readouts"]["naive"]["original"]["l1-c50"] == pytest.approx(s["baselines"]["USA"]["naive_loss"], abs=1e-3)
