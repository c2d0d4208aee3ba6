# Sourced by run_demo.sh, run_tests.sh and .ci/run: the Python environment scripts/install.sh made.
# An active venv/conda env wins; otherwise the project's .venv is put first on PATH.
if [ -z "${VIRTUAL_ENV:-}" ] && [ -z "${CONDA_PREFIX:-}" ]; then
  _slm_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  export VIRTUAL_ENV="$_slm_root/.venv"
  export PATH="$VIRTUAL_ENV/bin:$PATH"
  unset _slm_root
fi
