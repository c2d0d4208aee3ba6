"""Step `install`: megatron-slm (test extra), the wheelhouse's extra packages and the baseline
megatron-core, `pip install --no-index` into a throwaway venv; then an import and a console script
from outside the checkout."""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from gpucheck.environment import make_env
from gpucheck.results import Result, StepFailed

if TYPE_CHECKING:
    from gpucheck.runner import Check


def step_install(check: Check, result: Result, deadline: float) -> None:
    hide = {w["name"] for w in check.wh.wheels}
    logs = []
    python, pip = make_env(check.env_dir, hide, logs.append)
    for line in logs:
        check.log(f"install: {line}")
    specs = check.wh.install_specs(check.mcore)
    cmd = [*pip, "install", "--no-index", "--find-links", str(check.wh.path), "--no-input", *specs]
    result.details["command"] = " ".join(["pip", *cmd[len(pip):]])
    if check.run_cmd(result, cmd, deadline - time.time()).returncode != 0:
        raise StepFailed(f"pip install from the wheelhouse failed: {check.tail(result)}")
    # From outside the checkout: the installed package, not the source tree, must answer.
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "import.json"
        code = ("import json, sys, megatron_slm, megatron.core, torch; from importlib import metadata; "
                "d = metadata.distribution('megatron-slm'); "
                "json.dump({'megatron_slm': megatron_slm.__file__, 'megatron_slm_version': d.version, "
                "'megatron_core': megatron.core.__version__, 'torch': torch.__version__, 'prefix': sys.prefix, "
                "'scripts': sorted(e.name for e in d.entry_points if e.group == 'console_scripts')}, "
                f"open({str(report)!r}, 'w'))")
        if check.run_cmd(result, [python, "-c", code], deadline - time.time(), cwd=Path(tmp)).returncode != 0:
            raise StepFailed(f"importing the installed megatron_slm failed: {check.tail(result)}")
        info = json.loads(report.read_text())
    if not Path(info["megatron_slm"]).resolve().is_relative_to(check.env_dir.resolve()):
        raise StepFailed(f"megatron_slm was imported from {info['megatron_slm']}, not from the wheelhouse install")
    result.figures.update({"megatron-slm": info["megatron_slm_version"], "megatron-core": info["megatron_core"],
                           "torch": info["torch"]})
    scripts = info["scripts"]
    if scripts:
        script = "slm-estimate-memory" if "slm-estimate-memory" in scripts else scripts[0]
        exe = python.parent / script
        if check.run_cmd(result, [exe, "--help"], deadline - time.time(), cwd=Path(tempfile.gettempdir())).returncode:
            raise StepFailed(f"console script {script} --help failed: {check.tail(result)}")
        result.figures["console script"] = f"{script} ok"
    else:
        result.details["note"] = "the wheel declares no console scripts"
    check.python, check.pip = python, pip
