"""The steps, in the order they run: each with its title, default time limit (seconds), what it needs
and the function that runs it. A step that cannot run here is skipped with the reason `unmet` gives;
a failing step is reported and the next still runs."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional

from gpucheck import BENCH
from gpucheck.generation import step_generate
from gpucheck.install import step_install
from gpucheck.pytest_steps import step_cpu_suite, step_gpu_tests
from gpucheck.results import Result
from gpucheck.train import step_train, step_train_fp8
from gpucheck.units import step_units

if TYPE_CHECKING:
    from gpucheck.runner import Check


@dataclass(frozen=True)
class Step:
    name: str
    title: str
    limit_s: int
    needs: tuple[str, ...]  # env (the install succeeded), cuda, te, generate (bench/generate.py), newer-mcore
    run: Callable[["Check", Result, float], None]  # (check, its result, deadline)


STEPS = (
    Step("install", "install from the wheelhouse (no index)", 45, (), step_install),
    Step("gpu-tests", "pytest -m gpu", 60, ("env", "cuda"), step_gpu_tests),
    Step("train", "Llama-3.2-1B shape, bf16, local spec", 150, ("env", "cuda"), step_train),
    Step("train-fp8", "the same, Transformer Engine spec, FP8", 90, ("env", "cuda", "te"), step_train_fp8),
    Step("units", "HuBERT units on GPU batches", 90, ("env", "cuda"), step_units),
    Step("generate", "generation benchmark", 45, ("env", "cuda", "generate"), step_generate),
    Step("cpu-suite", "CPU suite on the newest megatron-core", 90, ("env", "newer-mcore"), step_cpu_suite),
)
STEP_NAMES = tuple(s.name for s in STEPS)
DEFAULT_LIMITS = {s.name: s.limit_s for s in STEPS}
TE_ABSENT_REASON = ("Transformer Engine is not importable here (its CUDA 13 wheel is ~276 MB, over the "
                    "wheelhouse budget): the TE layer spec and FP8 are not checked")


def plan_steps(args) -> list[Step]:
    """The steps of --steps, in their order, with the time limits of --limit."""
    return [Step(s.name, s.title, args.limits[s.name], s.needs, s.run) for s in STEPS if s.name in args.steps]


def unmet(step: Step, probe: dict, env_ok: bool, mcore: Optional[str], newest: Optional[str]) -> Optional[str]:
    """Why `step` cannot run in the environment `probe` describes (None: it can)."""
    for need in step.needs:
        if need == "env" and not env_ok:
            return "needs the install step, which did not succeed"
        if need == "cuda" and not probe.get("cuda"):
            return "no CUDA device" + (f" ({probe['error']})" if probe.get("error") else "")
        if need == "te" and not probe.get("te"):
            return TE_ABSENT_REASON
        if need == "generate" and not (BENCH / "generate.py").is_file():
            return "bench/generate.py not available yet"
        if need == "newer-mcore" and (not newest or newest == mcore):
            return (f"the wheelhouse holds no megatron-core newer than {mcore}" if mcore else
                    "the wheelhouse holds no megatron-core")
    return None
