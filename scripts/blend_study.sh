#!/usr/bin/env bash
# The BLEnD study of docs/results/blend-preference.md in one resumable command: for each method, SFT,
# then DPO and GRPO from the SFT adapter, each followed by `generate-eval` on the same 300 held-out
# records; then the comparison tables and the old-vs-new match rule of every report.
#
#   bash scripts/blend_study.sh                        # both chains (lora, cuma), one after the other
#   METHODS=cuma THREADS=1 bash scripts/blend_study.sh # one chain, e.g. two side by side on 2 cores
#   DRY_RUN=1 bash scripts/blend_study.sh              # print the steps still to run, run nothing
#
# A finished step (its adapter or report exists) is skipped; a training step that stopped part-way
# continues from its newest checkpoint (--resume). Every run writes OUT/<method>-<stage>.log.
# About 2 h for both chains side by side with THREADS=1 on the 2-core CPU (cost table of blend-preference.md).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-runs/blend}"
METHODS="${METHODS:-lora cuma}"
THREADS="${THREADS:-2}"
MODEL="${MODEL:-smollm2-135m}"
export OMP_NUM_THREADS="$THREADS"  # torch threads of every step
export MKL_NUM_THREADS="$THREADS" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
C=(--model "$MODEL" --data blend --split question --test-frac 0.2 --seed 0 --top-layers 8
   --save-steps 50 --logging-steps 10 --no-progress)
E=(--max-records 300 --max-new-tokens 16)
declare -A STAGE_ARGS=(
  [sft]="--stage sft --steps 300 --batch-size 8"
  [dpo]="--stage dpo --steps 200 --batch-size 8 --lr 5e-5 --dpo-beta 0.1"
  [grpo]="--stage grpo --steps 200 --batch-size 4 --lr 2e-5 --grpo-num-generations 4 --grpo-max-completion-length 16 --grpo-reward blend-match --grpo-beta 0.04"
)

step() {  # step LOG CMD...: run (or, with DRY_RUN, print) one command, its output appended to LOG
  local log="$1"; shift
  echo "+ $*"
  [ -n "${DRY_RUN:-}" ] && return 0
  echo "\$ $*" >> "$log"
  "$@" >> "$log" 2>&1 || { echo "error: step failed, see $log" >&2; exit 1; }
}

mkdir -p "$OUT"
for m in $METHODS; do
  for s in sft dpo grpo; do
    run="$OUT/$m-$s"
    if [ ! -f "$run/adapter/adapter_config.json" ]; then
      init=(); [ "$s" = sft ] || init=(--init-adapter "$OUT/$m-sft/adapter")
      resume=(); compgen -G "$run/checkpoints/checkpoint-*" > /dev/null && resume=(--resume)
      # shellcheck disable=SC2086
      step "$run.log" pluralign train --method "$m" "${C[@]}" ${STAGE_ARGS[$s]} \
        "${init[@]}" "${resume[@]}" --out "$run"
    fi
    [ -f "$OUT/eval-$m-$s.json" ] || step "$run.log" pluralign generate-eval --adapter "$run/adapter" "${E[@]}" \
      --out "$OUT/eval-$m-$s.json"
  done
done
[ -n "${DRY_RUN:-}" ] && exit 0
reports=()
for m in lora cuma; do for s in sft dpo grpo; do
  [ -f "$OUT/eval-$m-$s.json" ] && reports+=("$OUT/eval-$m-$s.json")
done; done
pluralign compare "${reports[@]}" | tee "$OUT/compare.md"
python scripts/blend_rematch.py "${reports[@]}" | tee "$OUT/rematch.md"   # one table, every report
