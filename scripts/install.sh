#!/usr/bin/env bash
# Install megatron-slm and what it needs on a fresh CPU machine (Debian/Ubuntu, Python >= 3.10).
#   bash scripts/install.sh            # system tools (root only) + pip packages
# GPU clusters: afterwards `pip install -e ".[gpu]"` for Transformer Engine (needs CUDA), and
# build NVIDIA Apex from source if you want its fused kernels (never `pip install apex`).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! command -v espeak-ng >/dev/null || ! command -v sox >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "[install] apt: espeak-ng sox"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng sox >/dev/null
  else
    echo "[install] espeak-ng/sox missing and no root apt: corpus synthesis tests will be skipped"
  fi
fi
# Pin torch first: an unpinned torch would pull a multi-GB CUDA build on a CPU machine.
if ! $PY -c "import torch" 2>/dev/null; then
  echo "[install] torch"
  $PY -m pip install -q "torch==${TORCH_VERSION:-2.13.0}"
fi
echo "[install] megatron-slm with the audio and test extras"
$PY -m pip install -q -e ".[audio,test]"
