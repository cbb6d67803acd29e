#!/usr/bin/env bash
# Train the course checkpoints on one GPU in one call and copy what comes out to $OUT: the weights and cards of
# jepa_lite/checkpoints/, results/accuracy_vs_compute.png and the logs (10 files at most).
#
#   OUT=/tmp/out JEPA_DATA=.data CHECKPOINTS=ijepa scripts/gpu_course_checkpoints.sh
#   OUT=/tmp/out QUICK=1 scripts/gpu_course_checkpoints.sh     # a few steps each, anywhere (checks the script)
#
# JEPA_DATA: a folder with the four Fashion-MNIST IDX files (a GPU machine without the Debian package needs them
# carried along). CHECKPOINTS: which, comma-separated (default all three, trained side by side:
# 45,000 steps of batch 32 are bound by kernel launches, not by the GPU's arithmetic).
set -euo pipefail
CHECKPOINTS="${CHECKPOINTS:-ijepa,mae,invariant}"
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the folder that should receive the checkpoints}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python3 -c "import torch; print('torch', torch.__version__, '| device:', torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')"
if [ -n "${QUICK:-}" ]; then
  results="$OUT/quick" weights="$OUT/quick/checkpoints" quick=(--quick)
else
  results=results weights=jepa_lite/checkpoints quick=()
fi
# One process per checkpoint, all at once: steps of batch 32 leave a large GPU mostly idle, so three runs side by
# side take about as long as one. Then the figure is drawn from the three cards.
pids=()
for name in ${CHECKPOINTS//,/ }; do
  python3 scripts/reproduce.py --groups course_checkpoints --checkpoints "$name" --out "$results" --quiet \
    "${quick[@]}" > "$OUT/log-$name.txt" 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
tail -n 5 "$OUT"/log-*.txt
python3 scripts/reproduce.py --groups course_checkpoints --out "$results" --summary-only "${quick[@]}" \
  | tee "$OUT/log.txt"
cp "$weights"/*.safetensors "$weights"/*.json "$results/accuracy_vs_compute.png" "$OUT/"
ls -la "$OUT"
exit "$status"
