"""The GPU check: install from an offline wheelhouse, then check the GPU paths and measure the GPU
figures on a node (`python scripts/gpu_check.py`, docs/gpu.md).

manifest.py      the wheelhouse's manifest.json: written by scripts/wheelhouse.py, read and verified here
steps.py         the step list: name, title, default time limit, what each needs, the function that runs it
runner.py        `Check`: runs the planned steps in order, each in its own process group and time limit,
                 and rewrites the results after every step
install.py       step install             train.py       steps train, train-fp8
pytest_steps.py  steps gpu-tests, cpu-suite  units.py    step units (and its GPU worker)
generation.py    step generate
plugin.py        the pytest plugin that logs every test's outcome as it happens, and its reader
environment.py   the throwaway venv, offline pip settings, the probe of an interpreter
report.py        gpu_check.md and the printed plan
dryrun.py        --dry-run: the plan for the node, nothing installed
cli.py           the command line
"""
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]  # the checkout the check runs from (tests, pretrain_slm.py, bench)
SCRIPTS = REPO / "scripts"  # on PYTHONPATH for subprocesses that import this package
ENTRY = SCRIPTS / "gpu_check.py"
BENCH = REPO / "bench"
TINY_CPU = REPO / "examples" / "configs" / "tiny_cpu.yaml"
CORPUS_AUDIO = REPO / "examples" / "data" / "tiny_corpus" / "audio"
