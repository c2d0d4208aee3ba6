"""Steps `gpu-tests` (pytest -m gpu) and `cpu-suite` (the CPU suite against the newest megatron-core
of the wheelhouse, failures rerun on the baseline), both through the plugin's per-test log."""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from gpucheck import REPO, SCRIPTS
from gpucheck.environment import offline_env, probe_environment
from gpucheck.plugin import PYTEST_LOG_ENV, count_outcomes, read_test_log
from gpucheck.results import Result, StepFailed, StepTimeout

if TYPE_CHECKING:
    from gpucheck.runner import Check


# A test file mentioning one of these exercises megatron-core: the cpu-suite runs those first, so
# that a run cut by its time limit has covered what the megatron-core version can change.
MCORE_HINTS = ("megatron.core", "run_torchrun", "PRETRAIN", "megatron_slm.training", "megatron_slm.convert",
               "megatron_slm.checkpoint", "megatron_slm.models", "megatron_slm.runtime", "megatron_slm.eval")


def run_pytest(check: Check, result: Result, args: list[str], timeout: float, python: Path,
               extra_env: dict, log_name: str, cwd: Path = REPO) -> dict[str, dict]:
    """Run pytest with gpucheck.plugin, which logs every test's outcome as it happens (so a
    run cut by its time limit still reports what ran); raise StepFailed when pytest itself broke."""
    log_path = check.out / "logs" / log_name
    log_path.unlink(missing_ok=True)
    extra = dict(extra_env)
    path = [p for p in (extra.pop("PYTHONPATH", None), str(SCRIPTS)) if p]  # for `-p gpucheck.plugin` below
    env = offline_env({"OMP_NUM_THREADS": "4", **extra, "PYTHONPATH": os.pathsep.join(path),
                       PYTEST_LOG_ENV: str(log_path)})
    cmd = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "gpucheck.plugin", "-rfs", *args]
    try:
        rc = check.run_cmd(result, cmd, timeout, cwd=cwd, env=env, tag="pytest").returncode
    except StepTimeout:
        result.details["partial"] = read_test_log(log_path)
        raise
    if rc not in (0, 1, 5):  # 1: some tests failed, 5: none collected; others: pytest could not run
        raise StepFailed(f"pytest exited with {rc}: {check.tail(result)}")
    return read_test_log(log_path)


def step_gpu_tests(check: Check, result: Result, deadline: float) -> None:
    tests = {}
    try:
        tests = run_pytest(check, result, ["-m", "gpu", f"--timeout={check.args.test_timeout}", "tests"],
                           deadline - time.time(), check.python, {}, "gpu-tests.jsonl")
    finally:
        tests = tests or result.details.pop("partial", {})
        _report_tests(result, tests)
    n = count_outcomes(tests)
    if n["failed"]:
        raise StepFailed(f"{n['failed']} of {len(tests)} gpu tests failed")
    if not n["passed"]:
        result.status = "skipped"
        result.reason = f"none of the {len(tests)} gpu tests can run here (reasons below)"


def _report_tests(result: Result, tests: dict[str, dict]) -> None:
    result.figures.update(count_outcomes(tests))
    result.details["not_run"] = [{"nodeid": k, "reason": t["reason"]} for k, t in sorted(tests.items())
                                 if t["outcome"] == "skipped"]
    result.details["failed"] = [{"nodeid": k, "reason": t["reason"], "rerun": t.get("rerun", k)}
                                for k, t in sorted(tests.items()) if t["outcome"] == "failed"]


def cpu_suite_files() -> list[str]:
    """Test files, those that exercise megatron-core first."""
    files = sorted((REPO / "tests").glob("test_*.py"))
    first = [f for f in files if any(h in f.read_text(errors="replace") for h in MCORE_HINTS)]
    return [str(f.relative_to(REPO)) for f in first + [f for f in files if f not in first]]


def step_cpu_suite(check: Check, result: Result, deadline: float) -> None:
    overlay = check.out / f"megatron-core-{check.newest}"
    shutil.rmtree(overlay, ignore_errors=True)
    cmd = [*check.pip, "install", "--no-index", "--find-links", str(check.wh.path), "--no-deps", "--target",
           str(overlay), f"megatron-core=={check.newest}"]
    if check.run_cmd(result, cmd, deadline - time.time()).returncode != 0:
        raise StepFailed(f"installing megatron-core {check.newest} from the wheelhouse failed: {check.tail(result)}")
    hidden_gpu = {"CUDA_VISIBLE_DEVICES": ""}  # the CPU-portable part: no test may pick the GPU
    got = probe_environment(check.python, {"PYTHONPATH": str(overlay), **hidden_gpu})
    if got.get("megatron_core") != check.newest:
        raise StepFailed(f"with the overlay, megatron.core imports as {got.get('megatron_core')}, "
                         f"not {check.newest}: {got.get('error', '')}")
    result.figures["megatron-core"] = check.newest
    marker = "not gpu and not slow"
    result.details["command"] = f"pytest -m '{marker}' (megatron-core {check.newest}, CUDA hidden)"
    suite_deadline = deadline - min(60.0, 0.25 * (deadline - time.time()))  # leave time for the rerun
    tests = {}
    try:
        tests = run_pytest(check, result, ["-m", marker, f"--timeout={check.args.test_timeout}",
                                           *(check.args.cpu_tests or cpu_suite_files())],
                           suite_deadline - time.time(), check.python, {"PYTHONPATH": str(overlay), **hidden_gpu},
                           "cpu-suite.jsonl")
        cut = None
    except StepTimeout as e:
        tests, cut = result.details.pop("partial", {}), str(e)
    _report_tests(result, tests)
    result.details.pop("not_run", None)  # skips here are the usual CPU ones (no espeak, ...), not findings
    failed = [t["rerun"] for t in result.details["failed"]]
    if failed and deadline - time.time() > 15:  # the same tests on the baseline megatron-core
        try:
            base = run_pytest(check, result, [f"--timeout={check.args.test_timeout}", *failed],
                              deadline - time.time(), check.python, dict(hidden_gpu), "cpu-suite-baseline.jsonl")
        except StepTimeout:
            base = result.details.pop("partial", {})
        for t in result.details["failed"]:
            b = base.get(t["nodeid"]) or next((v for v in base.values() if v.get("rerun") == t["rerun"]), None)
            t["baseline"] = (f"fails on {check.mcore} too" if b and b["outcome"] == "failed" else
                             f"passes on {check.mcore}" if b and b["outcome"] == "passed" else
                             f"not rerun on {check.mcore}")
        result.figures["fail only past the baseline"] = sum(1 for t in result.details["failed"]
                                                            if t["baseline"].startswith("passes"))
    if cut:
        raise StepTimeout(f"{cut}; {len(tests)} tests had run")
    if failed:
        raise StepFailed(f"{len(failed)} tests fail on megatron-core {check.newest}")
