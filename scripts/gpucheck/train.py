"""Steps `train` and `train-fp8`: a Llama-3.2-1B-shaped model (SIMS vocabulary) for a few steps on
one GPU, bf16 on the local layer spec, or FP8 on the Transformer Engine spec; figures from the
run's metrics.jsonl."""
from __future__ import annotations

import json
import shutil
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING

from gpucheck import REPO, TINY_CPU
from gpucheck.environment import offline_env
from gpucheck.results import Result, StepFailed

if TYPE_CHECKING:
    from gpucheck.runner import Check


def train_overrides(args, fp8: bool) -> list[str]:
    """A Llama-3.2-1B with the SIMS vocabulary (128256 text + 500 units + 2 markers) on synthetic
    tokens; tiny_cpu.yaml supplies the rest, everything that matters is set here."""
    o = [f"model.preset={args.train_preset}", f"model.vocab_size={args.train_vocab}", "runtime.device=cuda",
         "runtime.backend=nccl", "precision.dtype=bf16", f"train.seq_length={args.seq_length}",
         f"train.micro_batch_size={args.micro_batch}", f"train.global_batch_size={args.global_batch}",
         f"train.iters={args.train_steps}", "train.eval_iters=1", "optimizer.lr=3.0e-4", "optimizer.min_lr=3.0e-5",
         "optimizer.warmup_iters=2", "optimizer.clip_grad=1.0", "data.source=synthetic", "data.num_workers=0",
         "logging.interval=1", "logging.tensorboard=false", "runtime.timeout_minutes=5"]
    if fp8:
        o += ["model.spec=te", "precision.fp8=hybrid", "precision.fp8_recipe=delayed"]
    else:
        o += ["model.spec=local"]
    return o


def train_figures(metrics: Path, warmup: int) -> dict:
    lines = [json.loads(l) for l in metrics.read_text().splitlines() if l.strip()] if metrics.is_file() else []
    train = [l for l in lines if not l.get("validation") and not l.get("eval") and "tokens_per_sec" in l]
    if not train:
        return {}
    steady = train[warmup:] or train[-1:]

    def med(key):
        vals = [l[key] for l in steady if l.get(key) is not None]
        return statistics.median(vals) if vals else None

    fig = {"steps": len(train), "tokens/s": med("tokens_per_sec"), "TFLOP/s per GPU": med("model_tflops_per_gpu"),
           "MFU %": 100 * med("mfu") if med("mfu") is not None else None, "peak memory GiB": max((l.get("max_memory_gib") or 0) for l in train) or None,
           "step s": med("step_time_s"), "loss first": train[0].get("lm_loss"), "loss last": train[-1].get("lm_loss")}
    return {k: v for k, v in fig.items() if v is not None}


def _train(check: Check, result: Result, deadline: float, fp8: bool) -> None:
    run_dir = check.out / result.name
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    cmd = [check.python, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
           REPO / "pretrain_slm.py", "--config", TINY_CPU,
           *train_overrides(check.args, fp8)]
    result.details["command"] = "torchrun --nproc_per_node=1 pretrain_slm.py --config examples/configs/tiny_cpu.yaml " \
                                + " ".join(train_overrides(check.args, fp8))
    result.details["note"] = (f"{check.args.train_preset}, vocab {check.args.train_vocab}, seq {check.args.seq_length}, "
                              f"global batch {check.args.global_batch} (micro {check.args.micro_batch}), "
                              f"median over steps after the first {check.args.warmup_steps}")
    try:
        rc = check.run_cmd(result, cmd, deadline - time.time(), cwd=run_dir,
                           env=offline_env({"OMP_NUM_THREADS": "8"}), tag="training").returncode
    finally:
        result.figures.update(train_figures(run_dir / "metrics.jsonl", check.args.warmup_steps))
    if rc != 0:
        raise StepFailed(f"training exited with {rc}: {check.tail(result)}")
    if not result.figures:
        raise StepFailed("training wrote no metrics")


def step_train(check: Check, result: Result, deadline: float) -> None:
    _train(check, result, deadline, fp8=False)


def step_train_fp8(check: Check, result: Result, deadline: float) -> None:
    _train(check, result, deadline, fp8=True)
