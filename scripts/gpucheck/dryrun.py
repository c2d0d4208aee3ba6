"""--dry-run: resolve the wheelhouse, predict each step for the node (which gpu tests could run
there and why the others cannot, the training model's size from its real config), print the plan
and write gpu_check_plan.json; nothing is installed and nothing heavy runs."""
from __future__ import annotations

import importlib.util
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

from gpucheck import BENCH, ENTRY, REPO, TINY_CPU
from gpucheck.environment import offline_env, probe_environment
from gpucheck.manifest import Wheelhouse
from gpucheck.pytest_steps import cpu_suite_files
from gpucheck.report import print_plan
from gpucheck.steps import plan_steps, unmet
from gpucheck.train import train_overrides


# What the documented node lacks (docs/gpu.md); a dry run on a machine without CUDA predicts for it.
NODE_ABSENT = ("transformer_engine", "nvidia.dali")


class _HideModules:
    """sys.meta_path wrapper: the hidden top-level modules (and their submodules) are not found."""

    def __init__(self, finder, hidden: tuple[str, ...]):
        self.finder, self.hidden = finder, hidden

    def find_spec(self, name, path=None, target=None):
        if any(name == h or name.startswith(h + ".") for h in self.hidden):
            return None
        find = getattr(self.finder, "find_spec", None)
        return find(name, path, target) if find else None

    def invalidate_caches(self):
        if hasattr(self.finder, "invalidate_caches"):
            self.finder.invalidate_caches()


def collect_worker(out: Path, devices: int, absent: tuple[str, ...]) -> None:
    """Collect the gpu-marked tests as they would be on a node with `devices` CUDA devices (0: the
    real ones) and without the modules `absent`, and write which would run and why not."""
    if absent:
        sys.meta_path[:] = [_HideModules(f, absent) for f in sys.meta_path]
    if devices:
        import torch

        torch.cuda.is_available = lambda: True
        torch.cuda.device_count = lambda: devices
    import pytest

    found: list[dict] = []

    class Collector:
        @pytest.hookimpl(trylast=True)
        def pytest_collection_modifyitems(self, session, config, items):
            for item in items:
                if "gpu" not in item.keywords:
                    continue
                reasons = [m.kwargs.get("reason") or (m.args[0] if m.args else "skip")
                           for m in item.iter_markers("skip")]
                for m in item.iter_markers("skipif"):
                    conds = m.args or ((m.kwargs["condition"],) if "condition" in m.kwargs else ())
                    for c in conds:
                        if isinstance(c, str):
                            reasons.append(f"{m.kwargs.get('reason') or c} (condition decided at run time)")
                        elif c:
                            reasons.append(m.kwargs.get("reason") or "skipif")
                found.append({"nodeid": item.nodeid, "runs": not reasons, "reasons": list(dict.fromkeys(reasons))})

    code = pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", "-m", "gpu", str(REPO / "tests")],
                       plugins=[Collector()])
    out.write_text(json.dumps({"exit": int(code), "tests": found}, indent=1))


_TRAIN_CHECK = r"""
import json, sys
from megatron_slm.config import load_config
from megatron_slm.models.flops import param_counts, training_flops_per_token
from megatron_slm.models.presets import get_preset
cfg = load_config(sys.argv[1], sys.argv[2:])
m = cfg.model
arch = get_preset(m.preset).replace(vocab_size=m.vocab_size or get_preset(m.preset).vocab_size)
tokens = cfg.train.global_batch_size * cfg.train.seq_length
print(json.dumps({"params": param_counts(arch).total, "tokens_per_step": tokens,
                  "tflop_per_step": training_flops_per_token(arch, cfg.train.seq_length) * tokens / 1e12}))
"""


def check_train_config(args, fp8: bool) -> dict:
    """Load the training step's config with its overrides (the schema rejects a renamed key) and
    size the model, without torch: a mistake is found here, not on the node."""
    cmd = [sys.executable, "-c", _TRAIN_CHECK, str(TINY_CPU),
           *train_overrides(args, fp8)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120,
                          env=offline_env({"PYTHONPATH": str(REPO)}))
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def check_units_helpers() -> Optional[str]:
    """The units step borrows the CPU bench's model and codebook builders: still there?"""
    import ast

    names = {n.name for n in ast.parse((BENCH / "extract_units.py").read_text()).body if isinstance(n, ast.FunctionDef)}
    missing = {"mhubert_base_25hz_random", "fitted_sklearn_kmeans"} - names
    return f"bench/extract_units.py no longer defines {', '.join(sorted(missing))}" if missing else None


def predict_gpu_tests(simulate: bool, timeout: float = 180) -> dict:
    if importlib.util.find_spec("pytest") is None:
        return {"error": "pytest is not importable here (it comes with the wheelhouse): known after install"}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "collected.json"
        cmd = [sys.executable, str(ENTRY), "--worker", "collect", "--out", str(out)]
        if simulate:
            cmd += ["--simulate-devices", "1", "--absent", ",".join(NODE_ABSENT)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO,
                                  env=offline_env({"CUDA_VISIBLE_DEVICES": ""} if simulate else {}))
        except subprocess.TimeoutExpired:
            return {"error": f"collecting the gpu tests took over {timeout:.0f} s"}
        if not out.is_file():
            return {"error": f"collecting the gpu tests failed: {(proc.stderr or proc.stdout).strip()[-400:]}"}
        return json.loads(out.read_text())


def dry_run(args) -> int:
    out = Path(args.out).resolve()
    wh = Wheelhouse(Path(args.wheelhouse))
    wh.verify()
    mcore = wh.baseline_mcore(args.mcore)
    newest = wh.mcore.get("newest")
    fit = wh.fit()
    specs = wh.install_specs(mcore)
    here = probe_environment(Path(sys.executable))
    simulate = not here.get("cuda")
    target = dict(here)
    if simulate:  # predict for the documented node: one CUDA device, no TE, no DALI
        target.update(cuda=True, device="(the node's GPU)", device_count=1, te=False, dali=False, error=None)
    gpu_tests = predict_gpu_tests(simulate) if "gpu-tests" in args.steps else {}

    unfit = fit["unfit"]
    install_ok = not unfit
    planned, total = [], 0
    for step in plan_steps(args):
        reason = unmet(step, target, install_ok, mcore, newest)
        entry = {"name": step.name, "title": step.title, "limit_s": step.limit_s,
                 "status": "run" if reason is None else "skip", "reason": reason}
        if step.name == "install":
            entry["command"] = "pip install --no-index --find-links " + str(wh.path) + " " + " ".join(specs)
            if unfit:
                entry.update(status="fail", reason=f"{len(unfit)} wheels do not fit this Python "
                                                    f"{platform.python_version()} (the wheelhouse is for "
                                                    f"{wh.manifest.get('python')}): {', '.join(unfit[:3])}")
        elif step.name == "gpu-tests" and gpu_tests:
            if "error" in gpu_tests:
                entry["note"] = gpu_tests["error"]
            else:
                tests = gpu_tests["tests"]
                entry["tests"] = tests
                runnable = [t for t in tests if t["runs"]]
                entry["note"] = f"{len(runnable)} of {len(tests)} gpu tests can run"
                entry["not_run"] = [{"nodeid": t["nodeid"], "reason": "; ".join(t["reasons"])}
                                    for t in tests if not t["runs"]]
        elif step.name in ("train", "train-fp8"):
            entry["command"] = "torchrun --nproc_per_node=1 pretrain_slm.py --config examples/configs/tiny_cpu.yaml " \
                               + " ".join(train_overrides(args, step.name == "train-fp8"))
            sized = check_train_config(args, step.name == "train-fp8")
            if "error" in sized:
                entry.update(status="fail", reason=f"the training config does not load: {sized['error']}")
            else:
                entry["model"] = sized
                entry["note"] = (f"{sized['params'] / 1e9:.2f} B parameters, {sized['tokens_per_step']} tokens and "
                                 f"{sized['tflop_per_step']:.0f} TFLOP per step, {args.train_steps} steps")
        elif step.name == "units":
            problem = check_units_helpers()
            if problem:
                entry.update(status="fail", reason=problem)
        elif step.name == "cpu-suite" and newest:
            entry["command"] = f"pytest -m 'not gpu and not slow' with megatron-core {newest} (CUDA hidden); " \
                               f"failures rerun on {mcore}"
            entry["files"] = args.cpu_tests or cpu_suite_files()
        if entry["status"] == "run":
            total += step.limit_s
        planned.append(entry)

    plan = {"wheelhouse": {"path": str(wh.path), "python": wh.manifest.get("python"),
                           "platforms": wh.manifest.get("platforms", [])[:1], "wheels": len(wh.wheels),
                           "mib": round(wh.total_mib, 1), "sha256": "ok",
                           "megatron_core": {"versions": wh.mcore_versions(), "baseline": mcore, "newest": newest,
                                             "project": wh.mcore.get("project")},
                           "fit_here": {"python": platform.python_version(), "fit": len(fit["fit"]), "unfit": unfit},
                           "install": specs, "node_must_provide": wh.foreign_requirements(specs)},
            "here": here, "predicted_for": "the documented node (1 CUDA device, no " + ", ".join(NODE_ABSENT) +
            "; simulated: no CUDA here)" if simulate else "this machine",
            "budget_s": args.budget_s, "limits_total_s": total, "steps": planned}
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check_plan.json").write_text(json.dumps(plan, indent=1) + "\n")
    print_plan(plan)
    return 0
