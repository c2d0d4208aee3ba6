#!/usr/bin/env bash
# Build an offline wheelhouse for an air-gapped node (docs/gpu.md), on a machine that reaches the
# package index:
#   bash scripts/make_wheelhouse.sh --python 3.12 --out wh/ [--platform manylinux_2_28_x86_64] \
#        [--budget-mib 60] [--have node_packages.txt]
# Then copy the checkout and wh/ to the node and run `python scripts/gpu_check.py --wheelhouse wh/`
# (or `WHEELHOUSE=wh/ bash scripts/install.sh`). All options: --help.
# Needs a Python >= 3.10 with pip here (the project's .venv when it exists; PYTHON=... to choose);
# the target's Python version is --python, not this one.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ] && [ -z "${VIRTUAL_ENV:-}${CONDA_PREFIX:-}" ]; then PYTHON=.venv/bin/python
  else PYTHON=python3; fi
fi
exec "$PYTHON" scripts/wheelhouse.py "$@"
