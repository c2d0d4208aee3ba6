#!/usr/bin/env bash
# Install everything (once), then run the whole pipeline on a small story corpus made on the spot (CPU, ~6 min).
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/install.sh
source scripts/env.sh
exec bash examples/demo.sh "$@"
