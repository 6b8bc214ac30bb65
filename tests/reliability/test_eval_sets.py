"""An evaluation run is replaced as a whole (issue 9, items 3, 8, 12): an interrupted multi-method
eval leaves the old set untouched (SIGINT), or a staging folder the next run clears (SIGKILL);
no output holds NaN; files follow the umask."""

from __future__ import annotations

import json
import math
import os
import stat

import pytest

from pluralign.io import STAGED_MARK, StagedOutput, atomic_write_json, read_json, recover_staged
from reliability._helpers import eval_args, invoke, run_killed, tree_digest


def _strict(path):
    def bad(name):
        raise AssertionError(f"{path} holds {name}")

    return json.loads(path.read_text(), parse_constant=bad)


@pytest.fixture(scope="module")
def earlier(tmp_path_factory, tiny_model_dir):
    out = tmp_path_factory.mktemp("eval") / "set"
    res = invoke(eval_args(tiny_model_dir, out, extra=["--seed", "0"]))
    assert res.exit_code == 0, res.output
    return out


def test_results_are_valid_json_without_nan(earlier):
    files = sorted(earlier.glob("*.json"))
    assert {f.name for f in files} >= {"eval-wvs-shares-vanilla.json", "eval-wvs-shares-persona.json", "summary.json"}
    for f in files:
        _strict(f)
        assert stat.S_IMODE(f.stat().st_mode) & 0o044, f  # not mkstemp's 0600


def test_interrupted_multi_method_eval_leaves_the_old_set(earlier, tiny_model_dir, tmp_path):
    out = tmp_path / "set"
    import shutil
    import subprocess

    shutil.copytree(earlier, out)
    (out / "notes.txt").write_text("mine")  # not part of a result set: always kept
    before = tree_digest(out)
    p = run_killed("method", 1, "SIGINT", eval_args(tiny_model_dir, out, extra=["--seed", "1"]))
    assert p.returncode != 0
    assert tree_digest(out) == before  # the first method's new file is not beside the old second one
    assert [d.name for d in tmp_path.iterdir()] == ["set"]  # its staging folder is gone too
    # what a SIGKILL leaves (a staging folder of a dead process) is cleared by the next run,
    # which replaces the files it writes again (one method only now) and keeps the earlier
    # results of the other method (issue 27: earlier results are never deleted)
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f".set.staging-{dead.pid}-abc"
    stale.mkdir()
    (stale / "eval-wvs-shares-vanilla.json").write_text("{}")
    res = invoke(eval_args(tiny_model_dir, out, methods="vanilla", extra=["--seed", "1"]))
    assert res.exit_code == 0, res.output
    assert sorted(f.name for f in out.iterdir() if not f.name.startswith(".pluralign")) == [
        "eval-wvs-shares-persona.json", "eval-wvs-shares-vanilla.json", "notes.txt", "summary.json"]
    assert read_json(out / "eval-wvs-shares-persona.json") == read_json(earlier / "eval-wvs-shares-persona.json")
    assert [d.name for d in tmp_path.iterdir()] == ["set"]
    assert read_json(out / "summary.json")["results"] == [str(out / "eval-wvs-shares-vanilla.json")]


def test_a_commit_cut_between_its_renames_is_finished_by_the_next_run(tmp_path):
    final = tmp_path / "set"
    final.mkdir()
    (final / "eval-x-vanilla.json").write_text("old")
    st = StagedOutput(final)
    (st.path / "eval-x-vanilla.json").write_text("new")
    (st.path / STAGED_MARK).write_bytes(b"")
    os.replace(final, tmp_path / ".set.old-1")  # the crash: old set moved aside, new one not yet in place
    recover_staged(final)
    assert (final / "eval-x-vanilla.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]


def test_json_output_never_holds_nan_and_follows_the_umask(tmp_path):
    import numpy as np

    p = atomic_write_json(tmp_path / "r.json", {"a": float("nan"), "b": [float("inf"), 1.0], "c": np.float32("nan"),
                                                "d": np.array([1.0, np.nan])})
    assert _strict(p) == {"a": None, "b": [None, 1.0], "c": None, "d": [1.0, None]}
    old = os.umask(0o027)
    try:
        q = atomic_write_json(tmp_path / "s.json", {})
    finally:
        os.umask(old)
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~old and stat.S_IMODE(q.stat().st_mode) == 0o640


def test_compare_reads_older_results_with_nan(earlier, tmp_path):
    """Results written before this fix may hold NaN: compare still reads them (writes none)."""
    r = read_json(earlier / "eval-wvs-shares-vanilla.json")
    r["metrics"]["macro_f1"] = float("nan")
    f = tmp_path / "old" / "eval-wvs-shares-vanilla.json"
    f.parent.mkdir()
    f.write_text(json.dumps(r, allow_nan=True))
    res = invoke(["compare", f, "--out", tmp_path / "t.md"])
    assert res.exit_code == 0, res.output
    assert math.isnan(read_json(f, allow_nan=True)["metrics"]["macro_f1"])


def test_ctrl_c_after_a_finished_eval_exits_0_and_keeps_its_set(tiny_model_dir, tmp_path):
    """A SIGINT that lands after the results are written (during shutdown) is not a failed run."""
    out = tmp_path / "set"
    p = run_killed("exit", 0, "SIGINT", eval_args(tiny_model_dir, out, methods="vanilla"))
    assert p.returncode == 0, p.stderr
    assert "Aborted" not in p.stderr
    assert sorted(f.name for f in out.iterdir()) == ["eval-wvs-shares-vanilla.json", "summary.json"]
