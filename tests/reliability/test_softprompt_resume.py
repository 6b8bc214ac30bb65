"""Kill-and-resume of a soft-prompt search: SIGKILL after a generation's checkpoint and inside its
write; ``--resume`` ends with the uninterrupted search's prompt and convergence log."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from reliability._helpers import invoke, run_killed


def _args(model_dir, out, *extra):
    return ["softprompt", "--country", "USA", "--model", model_dir, "--tokens", "2", "--pop", "4", "--gens", "3",
            "--seed", "0", "--batch-size", "48", "--no-progress", "--out", out, *extra]


def _log(out):
    return [{k: h[k] for k in ("gen", "evals", "best", "gen_best", "gen_mean")}
            for h in map(json.loads, (out / "log.jsonl").read_text().splitlines())]


@pytest.fixture(scope="module")
def reference(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("sp") / "ref"
    res = invoke(_args(tiny_model_dir, out))
    assert res.exit_code == 0, res.output
    return out


@pytest.mark.parametrize("point, gen", [("gen", 1), ("gensave", 2)], ids=["after-checkpoint", "inside-checkpoint-write"])
def test_killed_search_resumes_to_the_uninterrupted_result(reference, tiny_model_dir, tmp_path, point, gen):
    out = tmp_path / "sp"
    p = run_killed(point, gen, "SIGKILL", _args(tiny_model_dir, out))
    assert p.returncode == -9, p.stderr
    done = 1 if point == "gen" else gen - 1  # a torn write leaves the previous generation's checkpoint
    assert [h["gen"] for h in _log(out)] == list(range(done + 1))
    res = invoke(_args(tiny_model_dir, out, "--resume"))
    assert res.exit_code == 0, res.output
    got, want = _log(out), _log(reference)
    assert [h["gen"] for h in got] == [h["gen"] for h in want] == [0, 1, 2, 3]
    for g, w in zip(got, want):
        assert g == pytest.approx(w, rel=1e-9)
    a, b = load_file(str(out / "prompt.safetensors")), load_file(str(reference / "prompt.safetensors"))
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
