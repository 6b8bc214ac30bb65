"""bench/gpu_suite.sh runs end to end as a CPU dry run on tiny shapes (so the GPU suite never rots)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_suite_dry_run(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path), PYTHON=sys.executable, OMP_NUM_THREADS="1")
    r = subprocess.run(["bash", str(ROOT / "bench" / "gpu_suite.sh"), "--dry-run"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    table = r.stdout[r.stdout.rindex("| benchmark | status |"):]
    for name in ("moe_lora_speed", "softprompt_throughput", "train_throughput"):
        assert f"| {name} | rc=0," in table, table
        assert (tmp_path / f"{name}.json").exists()
    assert "top-2-cached" in r.stdout
