"""``scripts/blend_study.sh``: the BLEnD chains as one resumable command. A dry run lists exactly the
steps still to do: finished adapters and reports are skipped, a stopped training step resumes."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "blend_study.sh"
pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _dry_run(out: Path, methods: str = "lora cuma") -> list[str]:
    env = dict(os.environ, DRY_RUN="1", OUT=str(out), METHODS=methods)
    res = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, check=True)
    return [line[2:] for line in res.stdout.splitlines() if line.startswith("+ ")]


def test_fresh_study_lists_every_stage_in_order(tmp_path):
    steps = _dry_run(tmp_path / "blend")
    assert len(steps) == 12  # 2 methods x 3 stages x (train, generate-eval)
    trains = [s for s in steps if s.startswith("pluralign train")]
    assert [(t.split("--method ")[1].split()[0], t.split("--stage ")[1].split()[0]) for t in trains] == [
        ("lora", "sft"), ("lora", "dpo"), ("lora", "grpo"), ("cuma", "sft"), ("cuma", "dpo"), ("cuma", "grpo")]
    # DPO and GRPO start from the method's own SFT adapter; SFT starts from the base model
    assert "--init-adapter" not in trains[0]
    assert f"--init-adapter {tmp_path}/blend/lora-sft/adapter" in trains[1]
    assert f"--init-adapter {tmp_path}/blend/cuma-sft/adapter" in trains[5]
    assert "--grpo-reward blend-match" in trains[2] and "--dpo-beta 0.1" in trains[1]
    assert all("--resume" not in t for t in trains)
    evals = [s for s in steps if s.startswith("pluralign generate-eval")]
    assert evals[0].endswith(f"--out {tmp_path}/blend/eval-lora-sft.json")


def test_finished_steps_are_skipped_and_a_stopped_one_resumes(tmp_path):
    out = tmp_path / "blend"
    (out / "lora-sft" / "adapter").mkdir(parents=True)
    (out / "lora-sft" / "adapter" / "adapter_config.json").write_text("{}")
    (out / "eval-lora-sft.json").write_text("{}")
    (out / "lora-dpo" / "checkpoints" / "checkpoint-50").mkdir(parents=True)
    steps = _dry_run(out, methods="lora")
    assert len(steps) == 4
    assert "--stage dpo" in steps[0] and steps[0].rstrip().endswith(f"--resume --out {out}/lora-dpo")
    assert "--stage grpo" in steps[2] and "--resume" not in steps[2]
