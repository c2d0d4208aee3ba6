"""Step `generate`: bench/generate.py on the GPU, with whichever of --device/--json/--out it offers."""
from __future__ import annotations

import json
import subprocess
import time
from typing import TYPE_CHECKING

from gpucheck import BENCH, REPO
from gpucheck.environment import offline_env
from gpucheck.results import Result, StepFailed

if TYPE_CHECKING:
    from gpucheck.runner import Check


def step_generate(check: Check, result: Result, deadline: float) -> None:
    script = BENCH / "generate.py"
    out = check.out / "generate"
    out.mkdir(parents=True, exist_ok=True)
    helptext = subprocess.run([str(check.python), str(script), "--help"], capture_output=True, text=True,
                              cwd=REPO, env=offline_env(), timeout=60).stdout
    cmd = [check.python, script]
    if "--device" in helptext:
        cmd += ["--device", "cuda"]
    report = out / "generate.json"
    for flag in ("--json", "--out"):
        if flag in helptext:
            cmd += [flag, report]
            break
    result.details["command"] = " ".join(["python", "bench/generate.py", *map(str, cmd[2:])])
    rc = check.run_cmd(result, cmd, deadline - time.time(), tag="bench/generate.py").returncode
    if report.is_file():
        try:
            data = json.loads(report.read_text())
            result.figures.update({k: v for k, v in data.items() if isinstance(v, (int, float, str))} if
                                  isinstance(data, dict) else {})
        except ValueError:
            pass
    if not result.figures:
        result.details["note"] = f"output: {check.tail(result, 4)}"
    if rc != 0:
        raise StepFailed(f"bench/generate.py exited with {rc}: {check.tail(result)}")
