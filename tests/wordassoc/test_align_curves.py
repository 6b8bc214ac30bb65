"""``scripts/align_curves.py`` draws one run or every seed of a study; a folder without runs is one error line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import load_script

def _script():
    return load_script("align_curves")


def _run(d: Path, shift: float, nested: bool = True) -> None:
    (d / "sft").mkdir(parents=True)
    (d / "rl").mkdir()
    (d / "sft" / "summary.json").write_text(json.dumps({"losses": [3 - shift, 2.5, 2.1], "n_cues": 10,
                                                         "config": {"logging_steps": 5, "batch_size": 8}}))
    # `wordassoc train` writes the GRPO settings nested (config.grpo); summaries before issue 28 had them flat
    cfg = {"grpo": {"num_generations": 4}, "batch_size": 8} if nested else {"num_generations": 4, "batch_size": 8}
    (d / "rl" / "summary.json").write_text(json.dumps({"rewards": [0.01 * i + shift for i in range(30)], "config": cfg}))


def test_one_run_and_a_study(tmp_path, capsys):
    ac = _script()
    _run(tmp_path / "one", 0.0, nested=False)
    ac.main(str(tmp_path / "one"), str(tmp_path / "one.png"))
    assert (tmp_path / "one.png").stat().st_size > 1000
    for s in (0, 1):
        _run(tmp_path / "study" / f"s{s}", 0.1 * s)
    assert [lab for lab, _ in ac._runs(tmp_path / "study")] == ["seed 0", "seed 1"]
    ac.main(str(tmp_path / "study"), str(tmp_path / "study.png"))
    assert (tmp_path / "study.png").stat().st_size > 1000
    with pytest.raises(SystemExit) as e:
        ac.main(str(tmp_path / "empty"), str(tmp_path / "x.png"))
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1 and not (tmp_path / "x.png").exists()
