#!/usr/bin/env bash
# Install everything, then run the whole test suite (CPU; GPU tests are skipped without CUDA).
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/install.sh
exec python3 -m pytest tests -q -p no:cacheprovider --timeout=900 "$@"
