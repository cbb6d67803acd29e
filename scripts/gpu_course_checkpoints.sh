#!/usr/bin/env bash
# Train the course checkpoints on one GPU in one call and copy what comes out to $OUT: the weights and cards of
# jepa_lite/checkpoints/, results/accuracy_vs_compute.png and the log (8 files at most).
#
#   OUT=/tmp/out JEPA_DATA=.data CHECKPOINTS=ijepa scripts/gpu_course_checkpoints.sh
#   OUT=/tmp/out QUICK=1 scripts/gpu_course_checkpoints.sh     # a few steps each, anywhere (checks the script)
#
# JEPA_DATA: a folder with the four Fashion-MNIST IDX files (a GPU machine without the Debian package needs them
# carried along). CHECKPOINTS: which, comma-separated (default all three; on one H100/H200 budget about ten
# minutes for `ijepa` alone: 45,000 small steps are bound by kernel launches, not by the GPU's arithmetic).
set -euo pipefail
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
python3 scripts/reproduce.py --groups course_checkpoints --checkpoints "${CHECKPOINTS:-ijepa,mae,invariant}" \
  --out "$results" --quiet "${quick[@]}" 2>&1 | tee "$OUT/log.txt"
cp "$weights"/*.safetensors "$weights"/*.json "$results/accuracy_vs_compute.png" "$OUT/"
ls -la "$OUT"
