"""One output folder belongs to one run of one kind (issue 27, class 6): the working folder and the
folders above it are refused, a folder of another kind of run is refused, two writers at once are
refused, and earlier results of other methods are kept."""

from __future__ import annotations

import os
import subprocess

import pytest

from pluralign.errors import PluralignError
from pluralign.io import claim_output, release_output


@pytest.mark.parametrize("out", [".", "..", "", "./", "../.."])
def test_the_working_folder_and_above_are_refused(tmp_path, monkeypatch, out):
    work = tmp_path / "a" / "b" / "c"
    work.mkdir(parents=True)
    (work / "keep.txt").write_text("mine")
    monkeypatch.chdir(work)
    with pytest.raises(PluralignError) as e:
        claim_output(out, "eval")
    assert "folder" in e.value.message
    assert sorted(p.name for p in work.iterdir()) == ["keep.txt"] and (work / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("sign, kind", [("train_config.json", "train"), ("summary.json", "eval"), ("eval-x-vanilla.json", "eval"),
                                        ("prompt.safetensors", "softprompt")])
def test_a_folder_of_another_kind_of_run_is_refused(tmp_path, sign, kind):
    out = tmp_path / "old"
    out.mkdir()
    (out / sign).write_text("{}")
    for other in ("train", "eval", "softprompt"):
        if other == kind:
            claim_output(out, other)  # the same kind again: fine
            release_output(out)
        else:
            with pytest.raises(PluralignError, match=f"pluralign {kind}"):
                claim_output(out, other)


_HOLD = """
import sys, time
from pluralign.io import claim_output
claim_output(sys.argv[1], "eval")
print("held", flush=True)
time.sleep(30)
"""


def test_two_writers_at_once_are_refused_and_a_dead_writers_lock_goes_with_it(tmp_path):
    import sys

    out = tmp_path / "ev"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(PluralignError, match="another pluralign run"):
            claim_output(out, "eval")
    finally:
        holder.kill()
        holder.wait()
    claim_output(out, "eval")  # its process is gone, and its lock with it
    release_output(out)
    assert list(out.iterdir()) == []  # no lock or marker file is left in the folder


def test_eval_cli_refuses_the_working_folder(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from pluralign.cli.main import app

    (tmp_path / "data.txt").write_text("x")
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["eval", "--out", ".", "--no-plot", "--no-progress"])
    assert res.exit_code == 2
    lines = [l for l in res.output.splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and "--out" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.txt"]
