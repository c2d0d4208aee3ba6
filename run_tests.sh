#!/usr/bin/env bash
# Install everything (once), then run the whole test suite (CPU; GPU tests are skipped without CUDA).
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/install.sh
source scripts/env.sh
exec python -m pytest tests -q -p no:cacheprovider --timeout=900 "$@"
