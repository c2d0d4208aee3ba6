#!/usr/bin/env bash
# Install everything (once), then run the tests (CPU; GPU tests are skipped without CUDA).
#   bash run_tests.sh                          # the whole suite
#   bash run_tests.sh -m "not slow"            # the inner loop: everything but multi-process/end-to-end tests
#   bash run_tests.sh tests/test_vocab.py -q   # only these paths (files, folders, file::test), with pytest args
# An argument that names a path (it exists, or ends in .py, or holds ::) is a test path; every other
# argument goes to pytest as it is. Without a test path the whole `tests/` folder runs.
set -euo pipefail
here=$PWD
cd "$(dirname "$0")"
bash scripts/install.sh
source scripts/env.sh
paths=() args=()
for arg in "$@"; do
  file=${arg%%::*}
  if [[ $arg != -* ]] && { [[ -e $here/$file || -e $file ]] || [[ $file == *.py || $arg == *::* ]]; }; then
    # relative to where the command was typed: the script runs pytest from the checkout
    [[ $arg == /* || ! -e $here/$file ]] && paths+=("$arg") || paths+=("$here/$arg")
  else
    args+=("$arg")
  fi
done
[ ${#paths[@]} -gt 0 ] || paths=(tests)
exec python -m pytest "${paths[@]}" -q -p no:cacheprovider --timeout=900 ${args[@]+"${args[@]}"}
