"""``scripts/softprompt_experiment.py``: the soft-prompt results table's driver (moved out of the
library: ``pluralign.blackbox`` has no argparse entry point and imports nothing from the CLI)."""

from __future__ import annotations

import importlib.util
import json

from conftest import load_script

def _load():
    return load_script("softprompt_experiment")


def test_report_prints_the_tables_of_a_summary(tmp_path, capsys):
    from pluralign.data.loaders.hofstede import DIMENSIONS

    dims = {d: 50.0 for d in DIMENSIONS}
    summary = {
        "naive_scores": dims,
        "baselines": {"USA": {"name": "United States", "target": {d: 40 for d in DIMENSIONS}, "naive_loss": 20.0,
                              "icl_loss": 15.0, "icl_scores": dims}},
        "runs": [{"country": "USA", "optimizer": "de", "initial_best": 14.0, "loss": 9.5, "scores": dims}],
        "knowledge": {},
    }
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    exp = _load()
    assert exp.main(["--report", "--out", str(tmp_path)]) == summary
    out = capsys.readouterr().out
    assert "| USA (United States) | 20.00 | 15.00 | 14.00 → **9.50** |" in out
    assert "| USA | de | " in out and out.count("\n| USA |") == 4  # target, naive, in-context, DE rows


def test_the_library_has_no_experiment_module():
    assert importlib.util.find_spec("pluralign.blackbox.experiment") is None
