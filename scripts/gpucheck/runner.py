"""`Check`: the planned steps in order, each in its own subprocess (process group) with its own time
limit and all within --budget-s; a failing step is reported and the next still runs. The results,
<out>/gpu_check.json and <out>/gpu_check.md, are rewritten after every step; logs go to <out>/logs/."""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

from gpucheck import REPO
from gpucheck.environment import describe_probe, offline_env, probe_environment
from gpucheck.manifest import Wheelhouse
from gpucheck.report import format_figures, render_markdown
from gpucheck.results import Result, StepFailed, StepTimeout
from gpucheck.steps import plan_steps, unmet


class Check:
    """One run: the wheelhouse, the environment the steps share, the results so far."""

    def __init__(self, args):
        self.args = args
        self.out = Path(args.out).resolve()
        self.wh = Wheelhouse(Path(args.wheelhouse))
        self.mcore = self.wh.baseline_mcore(args.mcore)
        self.newest = self.wh.mcore.get("newest")
        self.env_dir = self.out / "env"
        self.python: Optional[Path] = None
        self.pip: list[str] = []
        self.probe: dict = {}
        self.results: list[Result] = []
        self.started = time.time()
        self.deadline = self.started + args.budget_s
        self._log_file = None

    # -- plumbing
    def log(self, msg: str) -> None:
        line = f"[gpu_check] {msg}"
        print(line, flush=True)
        if self._log_file:
            self._log_file.write(line + "\n")
            self._log_file.flush()

    def env_python(self) -> Optional[Path]:
        python = self.env_dir / "venv" / "bin" / "python"
        return python if python.exists() else None

    def run_cmd(self, result: Result, cmd: list[str], timeout: float, cwd: Path = REPO,
                env: Optional[dict] = None, tag: str = "") -> subprocess.CompletedProcess:
        """Run `cmd` in its own process group with the output appended to the step's log; raise
        StepTimeout when it outlives `timeout` (the whole group is killed: torchrun has children)."""
        log_path = self.out / "logs" / f"{result.name}.log"
        result.log = str(log_path.relative_to(self.out))
        with open(log_path, "a") as fh:
            fh.write(f"\n$ {' '.join(map(str, cmd))}   (cwd {cwd}, limit {timeout:.0f} s)\n")
            fh.flush()
            proc = subprocess.Popen([str(c) for c in cmd], cwd=cwd, env=env or offline_env(), stdout=fh,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            try:
                rc = proc.wait(timeout=max(1.0, timeout))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                raise StepTimeout(f"{tag or Path(str(cmd[0])).name} ran past {timeout:.0f} s")
        return subprocess.CompletedProcess(cmd, rc)

    def tail(self, result: Result, n: int = 3) -> str:
        if not result.log:
            return ""
        lines = [l for l in (self.out / result.log).read_text(errors="replace").splitlines() if l.strip()]
        return " | ".join(lines[-n:])[-400:]

    def ensure_probe(self) -> None:
        """Describe the environment the next steps run in (the install step's venv when there is one)."""
        if self.probe:
            return
        self.python = self.env_python()
        pip_file = self.env_dir / "pip.json"
        self.pip = json.loads(pip_file.read_text()) if self.python and pip_file.is_file() else []
        self.probe = probe_environment(self.python or Path(sys.executable))
        self.log(f"environment: {describe_probe(self.probe)}")

    # -- the run
    def run(self) -> int:
        (self.out / "logs").mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.out / "logs" / "gpu_check.log", "a")
        self.wh.verify()
        self.log(f"wheelhouse {self.wh.path}: {len(self.wh.wheels)} wheels, {self.wh.total_mib:.1f} MiB, sha256 ok")
        steps = plan_steps(self.args)
        self.results = [Result(s.name, s.title, s.limit_s) for s in steps]
        self.write_summary()
        env_ok = self.env_python() is not None  # a previous run's env, when install is not a step here
        for step, result in zip(steps, self.results):
            if step.name != "install":
                self.ensure_probe()
            reason = unmet(step, self.probe, env_ok, self.mcore, self.newest)
            remaining = self.deadline - time.time()
            if reason is None and remaining < 10:
                reason = f"the {self.args.budget_s:.0f} s budget is spent"
            if reason is not None:
                result.status, result.reason = "skipped", reason
                self.log(f"{step.name}: skipped ({reason})")
                self.write_summary()
                continue
            limit = min(step.limit_s, remaining)
            self.log(f"{step.name}: {step.title} (limit {limit:.0f} s)")
            t0 = time.time()
            result.details["limit_effective_s"] = round(limit)
            try:
                step.run(self, result, t0 + limit)
                if result.status == "pending":
                    result.status = "ok"
            except StepTimeout as e:
                result.status, result.reason = "timeout", f"{e} (step limit {limit:.0f} s)"
            except StepFailed as e:
                result.status, result.reason = "failed", str(e)
            except Exception as e:  # a bug in a step must not stop the others
                result.status, result.reason = "failed", f"{type(e).__name__}: {e}"
            result.seconds = round(time.time() - t0, 1)
            if step.name == "install":
                env_ok = result.status == "ok"
                self.probe = {}  # the next step describes the new environment
            self.log(f"{step.name}: {result.status} in {result.seconds:.0f} s"
                     + (f" -- {result.reason}" if result.reason else "")
                     + (f" -- {format_figures(result.figures)}" if result.figures else ""))
            self.write_summary()
        self.ensure_probe()
        self.write_summary()
        self.log(f"done in {time.time() - self.started:.0f} s: {self.out / 'gpu_check.md'}")
        return 0 if all(r.status in ("ok", "skipped") for r in self.results) else 1

    # -- reports
    def header(self) -> dict:
        p = self.probe or {}
        return {"format": 1, "started": datetime.datetime.fromtimestamp(self.started).isoformat(timespec="seconds"),
                "seconds": round(time.time() - self.started, 1), "budget_s": self.args.budget_s,
                "host": platform.node(), "python": p.get("python") or platform.python_version(),
                "torch": p.get("torch"), "cuda": p.get("cuda_version"), "device": p.get("device"),
                "device_count": p.get("device_count"), "megatron_core": self.mcore,
                "megatron_core_newest": self.newest,
                "wheelhouse": {"path": str(self.wh.path), "python": self.wh.manifest.get("python"),
                               "mib": round(self.wh.total_mib, 1), "wheels": len(self.wh.wheels)},
                "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])}

    def write_summary(self) -> None:
        data = {**self.header(), "steps": [dataclasses.asdict(r) for r in self.results]}
        (self.out / "gpu_check.json").write_text(json.dumps(data, indent=1) + "\n")
        (self.out / "gpu_check.md").write_text(render_markdown(data))
