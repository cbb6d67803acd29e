#!/usr/bin/env bash
# Every GPU measurement of the repository in one call, each written as JSON (or a log) to one folder, most
# valuable first, each under its own time limit so that one slow compile cannot eat the rest:
#   1. ViT-H/14 I-JEPA steps at batch 128 in bf16 with fixed shapes (mask.context_fill=fixed), eager and
#      compiled, each with the plain-ViT reference of the same size (the MFU ratio); then the same step with
#      the default masks' changing shapes (subsample), and ViT-L/16 and ViT-B/16 eager;
#   2. tests/test_gpu.py;
#   3. the course default run end to end (training and probes): `python scripts/pretrain.py`;
#   4. ViT-L/16 and ViT-B/16 compiled, with what is left of the budget (BUDGET seconds in all, default 540).
#
#   OUT=/tmp/gpu JEPA_DATA=.data scripts/gpu_check.sh        # about 8 minutes on one H100/H200
#   OUT=/tmp/gpu QUICK=1 scripts/gpu_check.sh                # a tiny version anywhere (checks the script)
#
# JEPA_DATA: a folder with the four Fashion-MNIST IDX files, for part 3 where the Debian package is missing.
set -uo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the folder that should receive the JSONs}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python3 -c "import torch; print('torch', torch.__version__, '| device:', torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')" \
  | tee "$OUT/device.txt"
if [ -n "${QUICK:-}" ]; then
  big=course mid=course small=course batch=4 steps=(--steps 2 --warmup 1) compiled=()
  fast=(optim.max_steps=3 eval.train_limit=300 eval.test_limit=100 eval.low_shot_per_class=5)
else
  big=vit_huge_patch14 mid=vit_large_patch16_224 small=vit_base_patch16_224 batch=128
  steps=(--steps 10 --warmup 3) compiled=(--compile) fast=()
fi
BUDGET=${BUDGET:-540}  # seconds for everything; a part that would start after it is skipped
t0=$(date +%s)
failed=0
run() {  # run NAME SECONDS COMMAND...: log to $OUT/NAME.log within what is left of BUDGET; note failures
  local name=$1 seconds=$2 left
  shift 2
  left=$(( BUDGET - ($(date +%s) - t0) ))
  if [ "$left" -lt 20 ]; then echo "== $name skipped: the budget is spent"; failed=1; return; fi
  [ "$seconds" -gt "$left" ] && seconds=$left
  echo "== $name (at most ${seconds}s)"
  if ! timeout "$seconds" "$@" > "$OUT/$name.log" 2>&1; then
    echo "   $name failed or ran out of time (see $name.log)"
    failed=1
  fi
  tail -n 3 "$OUT/$name.log"
}
step() {  # step NAME SECONDS MODEL FILL [--compile]: one benchmark with its plain-ViT reference
  local name=$1 seconds=$2 model=$3 fill=$4
  shift 4
  run "$name" "$seconds" python3 scripts/benchmark.py step --model "$model" --batch "$batch" --fill "$fill" \
    --reference "$@" "${steps[@]}" --json "$OUT/$name.json"
}
step step-vith14-fixed-eager 90 "$big" fixed
step step-vith14-fixed-compiled 200 "$big" fixed "${compiled[@]}"
step step-vith14-subsample-eager 90 "$big" subsample
step step-vitl16-fixed-eager 60 "$mid" fixed
step step-vitb16-fixed-eager 45 "$small" fixed
run tests-gpu 120 python3 -m pytest -q tests/test_gpu.py -p no:cacheprovider
data=()
[ -n "${JEPA_DATA:-}" ] && data=("data.root=$JEPA_DATA")
start=$(date +%s)
run default-run 150 python3 scripts/pretrain.py --out "$OUT/runs" --name default --quiet "${fast[@]}" "${data[@]}"
echo "{\"default_run_wall_s\": $(( $(date +%s) - start ))}" > "$OUT/default-run-wall.json"
[ -f "$OUT/runs/default/results.json" ] && cp "$OUT/runs/default/results.json" "$OUT/default-run-results.json"
rm -rf "$OUT/runs"  # the weights stay on the GPU machine; the results came out above
if [ ${#compiled[@]} -gt 0 ]; then  # what is left of the budget: the smaller models compiled
  step step-vitl16-fixed-compiled 120 "$mid" fixed "${compiled[@]}"
  step step-vitb16-fixed-compiled 90 "$small" fixed "${compiled[@]}"
fi
echo "total $(( $(date +%s) - t0 ))s"
ls -la "$OUT"
exit "$failed"
