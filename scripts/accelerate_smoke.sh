#!/usr/bin/env bash
# Data-parallel training through accelerate, exercised with 2 CPU processes (torchrun + gloo; `--cpu` alone
# would start ONE process, so `--multi_gpu` is used and each rank falls back to CPU/gloo without CUDA) on a tiny random
# model: the same command scales to N GPUs (`accelerate launch --num_processes N -m pluralign.cli.main train ...`).
# Not part of the default test suite (process start-up dominates: ~1-2 min on 2 cores).
#
#   bash scripts/accelerate_smoke.sh [METHOD]     # METHOD: lora (default), cuma, mixlora, ...
set -euo pipefail
cd "$(dirname "$0")/.."
METHOD="${1:-lora}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=1

python - "$WORK/tiny" <<'PY'
import sys
sys.path.insert(0, "tests")
from conftest import _tokenizer, make_tiny_model  # tiny Llama + byte-level BPE with a chat template
make_tiny_model("llama").save_pretrained(sys.argv[1])
_tokenizer().save_pretrained(sys.argv[1])
PY

accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no --dynamo_backend no \
  -m pluralign.cli.main train --method "$METHOD" --task distributional --model "$WORK/tiny" \
  --data wvs-shares --countries USA,DEU,THA --questions Q1,Q2,Q3,Q4,Q5,Q6 \
  --steps 4 --batch-size 2 --save-steps 2 --logging-steps 1 --no-progress --out "$WORK/run"

python - "$WORK/run" <<'PY'
import json, sys
from pathlib import Path
run = Path(sys.argv[1])
s = json.loads((run / "train_summary.json").read_text())
assert s["processes"] == 2, s
assert s["steps"] == 4, s
assert (run / "adapter").is_dir() and (run / "checkpoints" / "checkpoint-4").is_dir()
logs = [json.loads(l) for l in (run / "log.jsonl").read_text().splitlines()]
assert sum("loss" in l for l in logs) >= 4, logs  # one writer (rank 0), one record per step
print(f"accelerate smoke OK: {s['processes']} processes, {s['steps']} steps, {s['rows']} rows/process-shard set, "
      f"train loss {s['train_loss']:.4f}, {s['seconds']:.1f} s")
PY
