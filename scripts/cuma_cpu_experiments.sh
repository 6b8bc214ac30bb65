#!/usr/bin/env bash
# The CPU experiments of docs/results/cuma.md: SmolLM2-135M-Instruct, a few optimizer steps per method,
# evaluated on the held-out part of the same split. One thread per process (shared 2-core machine).
#
#   bash scripts/cuma_cpu_experiments.sh probe   # WVS respondent probe, split by respondent (seed 0)
#   bash scripts/cuma_cpu_experiments.sh shares  # WVS country shares, split by question (seed 0)
#   then: pluralign compare runs/exp/probe --out docs/results/cuma-probe.md
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
WHICH="${1:-probe}"
STEPS="${STEPS:-12}"
METHODS="${METHODS:-cuma lora}"
SEED="${SEED:-0}"
MAXQ=(${EVAL_MAX_ITEMS:+--max-items "$EVAL_MAX_ITEMS"})  # evaluate on the first N held-out questions only
ROOT="runs/exp/$WHICH-s$SEED"
if [ "$WHICH" = probe ]; then
  DATA=(--data wvs-probe --task individual --seed "$SEED")
else
  SEL=(--countries USA,CHN,DEU,NGA,BRA,IND,RUS,MEX)
  DATA=(--data wvs-shares --task distributional "${SEL[@]}" --seed "$SEED")
fi
mkdir -p "$ROOT"
for m in $METHODS; do
  if [ ! -f "$ROOT/$m/adapter/adapter_config.json" ]; then
    pluralign train --method "$m" "${DATA[@]}" --steps "$STEPS" --batch-size 8 --lr 1e-3 --warmup-ratio 0.1 \
      --save-steps 10 --logging-steps 2 --no-progress --out "$ROOT/$m" $(compgen -G "$ROOT/$m/checkpoints/checkpoint-*" >/dev/null && echo --resume) \
      > "$ROOT/$m.train.log" 2>&1
  fi
  [ -f "$ROOT/$m/eval/summary.json" ] || pluralign eval --adapter "$ROOT/$m/adapter" --split-from "$ROOT/$m" \
      --method persona "${MAXQ[@]}" --no-plot --no-progress --out "$ROOT/$m/eval" > "$ROOT/$m.eval.log" 2>&1
done
# the base model on the same held-out part
FIRST="${METHODS%% *}"
[ -f "$ROOT/base/summary.json" ] || pluralign eval --split-from "$ROOT/$FIRST" --method vanilla,persona "${MAXQ[@]}" --no-plot --no-progress \
    --out "$ROOT/base" > "$ROOT/base.eval.log" 2>&1
pluralign compare "$ROOT"
