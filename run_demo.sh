#!/usr/bin/env bash
# Install everything (once), then run the whole pipeline on the bundled corpus (CPU, a few minutes).
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/install.sh
source scripts/env.sh
exec bash examples/demo.sh "$@"
