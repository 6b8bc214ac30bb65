"""Shared by the reliability tests: run the CLI in-process or in a subprocess with a fault injected."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[2]
KILLER = Path(__file__).with_name("_killer.py")
QUESTIONS = "Q1,Q2,Q3,Q4,Q5,Q6"


def invoke(args):
    from pluralign.cli.main import app

    return CliRunner().invoke(app, [str(a) for a in args])


def stderr_of(res) -> str:
    try:
        return res.stderr
    except ValueError:  # click < 8.2 mixes the streams
        return res.output


def error_lines(res) -> list[str]:
    return [l for l in stderr_of(res).splitlines() if l.startswith("error:")]


def assert_one_error(res, *, contains: str | None = None):
    """Exit 2, exactly one ``error:`` line, no traceback; returns the line."""
    text = res.output + stderr_of(res)
    assert res.exit_code == 2, (res.exit_code, text, res.exception)
    lines = error_lines(res)
    assert len(lines) == 1, text
    assert "Traceback" not in text, text
    assert not isinstance(res.exception, Exception) or isinstance(res.exception, SystemExit), res.exception
    if contains:
        assert contains in lines[0], lines[0]
    return lines[0]


def tree_digest(path: Path) -> dict[str, str]:
    """name → sha256 of every file under ``path`` (empty when it does not exist)."""
    path = Path(path)
    if not path.exists():
        return {}
    return {str(f.relative_to(path)): hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(path.rglob("*")) if f.is_file()}


def run_killed(point: str, step: int, sig: str, args, *, timeout: int = 120) -> subprocess.CompletedProcess:
    """``pluralign ARGS`` in a fresh process that gets ``sig`` at ``point`` (see _killer.py)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT / "src"))
    return subprocess.run(
        [sys.executable, str(KILLER), point, str(step), sig, "--", *map(str, args)],
        env=env, capture_output=True, text=True, timeout=timeout, cwd=str(ROOT),
    )


def train_args(model_dir, out, *, steps: int = 4, save_steps: int = 2, extra=()):
    return ["train", "--method", "lora", "--task", "distributional", "--model", model_dir, "--data", "wvs-shares",
            "--countries", "USA,DEU,THA", "--questions", QUESTIONS, "--split", "question", "--test-frac", "0.34",
            "--steps", steps, "--batch-size", 4, "--save-steps", save_steps, "--logging-steps", 1, "--no-progress",
            *extra, "--out", out]


def eval_args(model_dir, out, *, methods: str = "vanilla,persona", extra=()):
    return ["eval", "--model", model_dir, "--data", "wvs-shares", "--countries", "USA,DEU,THA", "--questions", QUESTIONS,
            "--split", "question", "--test-frac", "0.34", "--method", methods, "--no-plot", "--no-progress", *extra,
            "--out", out]
