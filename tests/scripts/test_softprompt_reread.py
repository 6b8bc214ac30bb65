"""``scripts/softprompt_reread.py``: an earlier study's searched prompts read again under every VSM
convention, from stored scores only (no model)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import load_script

DIMS = ("PDI", "IDV", "MAS", "UAI", "LTO", "IVR")


def _calibration(naive: np.ndarray) -> dict:
    refs = []
    for code, shift in (("GBR", 5.0), ("JPN", -5.0)):
        from pluralign.data.loaders.hofstede import country_target

        t = country_target(code)
        refs.append({"code": t.code, "iso3": t.iso3, "name": t.name, "target": dict(t.scores),
                     "raw": {"original": dict(zip(DIMS, (naive + shift).tolist()))}})
    return {"naive_raw": {"original": dict(zip(DIMS, naive.tolist()))}, "references": refs}


def _old_study(scores: dict, loss: float) -> dict:
    return {"baselines": {"USA": {}},
            "runs": {"USA-de-d0-s0": {"code": "USA", "optimizer": "de", "dim": 0, "subspace_dim": 0, "seed": 0,
                                      "loss": loss, "scores": scores}}}


def test_reread_recomputes_the_stored_loss_and_reports_every_convention(tmp_path, capsys):
    rr = load_script("softprompt_reread")
    from pluralign.blackbox.objective import Calibration, Objective, readout_table
    from pluralign.blackbox.vsm import VSMConfig
    from pluralign.data.loaders.hofstede import country_target

    naive = np.array([-2.0, -3.0, 4.0, 40.0, 10.0, -15.0])
    cal = _calibration(naive)
    prompt_raw = naive + np.array([-5.0, 30.0, 5.0, -40.0, -30.0, 30.0])  # moves towards the USA's profile
    obj = Objective("diff", vsm=VSMConfig(), calibration=Calibration.from_dict(cal))
    ro = readout_table(obj, {"original": prompt_raw}, country_target("USA"))["original"]
    scores = dict(zip(DIMS, (prompt_raw + 50.0).tolist()))
    (tmp_path / "old.json").write_text(json.dumps(_old_study(scores, ro["l1-c50"])))
    (tmp_path / "new.json").write_text(json.dumps({"calibration": cal}))
    out = rr.main([str(tmp_path / "old.json"), str(tmp_path / "new.json")])
    row = [line for line in out.splitlines() if line.startswith("| USA | de full (n=1)")]
    assert len(row) == 1
    n0 = readout_table(obj, {"original": naive}, country_target("USA"))["original"]
    for conv in ("l1-c50", "l1-calibrated", "diff"):
        assert f"{n0[conv]:.2f} → **{ro[conv]:.2f}**" in row[0]
    assert ro["diff"] < n0["diff"]  # the constructed prompt is closer on the C-free read-out too


def test_reread_refuses_scores_that_do_not_give_the_stored_loss(tmp_path, capsys):
    rr = load_script("softprompt_reread")
    naive = np.zeros(6)
    (tmp_path / "old.json").write_text(json.dumps(_old_study(dict(zip(DIMS, [50.0] * 6)), 99.0)))
    (tmp_path / "new.json").write_text(json.dumps({"calibration": _calibration(naive)}))
    with pytest.raises(SystemExit) as e:
        rr.main([str(tmp_path / "old.json"), str(tmp_path / "new.json")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: USA-de-d0-s0: recomputed l1-c50") and err.count("\n") == 1


def test_reread_needs_a_summary_with_a_calibration(tmp_path, capsys):
    rr = load_script("softprompt_reread")
    (tmp_path / "old.json").write_text(json.dumps(_old_study({}, 0.0)))
    (tmp_path / "new.json").write_text(json.dumps({"runs": {}}))
    with pytest.raises(SystemExit) as e:
        rr.main([str(tmp_path / "old.json"), str(tmp_path / "new.json")])
    assert e.value.code == 2 and "no calibration recorded" in capsys.readouterr().err
