#!/usr/bin/env bash
# Set up the course on a fresh machine, in one command, and say what was done:
#   1. install jepa_lite with its test tools (pip install -e ".[dev]") and register the Jupyter kernel;
#   2. make sure Fashion-MNIST is on disk: found locally, else downloaded into ~/.cache/jepa_lite (needs the
#      internet), else Debian's dataset-fashion-mnist package through apt-get (as root, or with sudo).
# Safe to run again: what is already there is kept.
#
#   bash scripts/setup.sh              # everything
#   SKIP_INSTALL=1 bash scripts/setup.sh   # only the data (the package is installed already)
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1

if [ "${SKIP_INSTALL:-0}" != 1 ]; then
  echo "setup: installing jepa_lite and its test tools (pip install -e \".[dev]\")"
  python -m pip install -q -e ".[dev]"
  python -m ipykernel install --user --name python3 >/dev/null
  echo "setup: jepa_lite installed; Jupyter kernel 'python3' registered"
fi

have_data() {  # the loader's own search ($JEPA_DATA, the Debian folder, the cache), then a download
  python - <<'EOF' 2>/dev/null
from jepa_lite.data import build_dataset
folder = build_dataset("fmnist", train=False).root
print(f"setup: Fashion-MNIST found in {folder}")
EOF
}

if have_data; then
  exit 0
fi
echo "setup: Fashion-MNIST is not on disk and could not be downloaded; trying Debian's package"
if command -v apt-get >/dev/null; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist
  if have_data; then
    exit 0
  fi
fi
echo "setup: no Fashion-MNIST. Put its four IDX files in a folder and set JEPA_DATA=FOLDER (or pass --data)." >&2
exit 1
