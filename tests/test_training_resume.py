"""Every precision x optimizer sharding x TP/PP layout the run plan accepts saves and resumes
exactly: one torchrun per combination trains to step 4 saving at step 2, then resumes a copy
of the run from step 2 in the same process group; steps 3-4 must log bit-identical losses,
gradient norms and learning rates.

The default lane runs the default (bf16, regular optimizer, one process). The slow lane runs a
covering subset: every dtype with and without the distributed optimizer, every dtype on two
layouts, every layout with both optimizers. SLM_FULL_RESUME_MATRIX=1 runs all 24 combinations
(about 15 minutes on 2 cores). fp16 on the CPU overflows at Megatron's initial loss scale, so
its steps are all skipped: it also covers a checkpoint saved before the optimizer's first update.

A resumed run logs each iteration once (lines logged after the last checkpoint are dropped).
"""
from __future__ import annotations

import itertools
import json
import os

import pytest

from conftest import TINY_CPU, read_metrics, run_torchrun, train

DRIVER = """
import shutil, sys
from pathlib import Path
import torch.distributed as dist
from megatron_slm.config import load_config
from megatron_slm.training.trainer import Trainer

config, root, *overrides = sys.argv[1:]
whole, resumed = Path(root) / "whole", Path(root) / "resumed"
base = [*overrides, "train.iters=4", "checkpoint.interval=2", "train.eval_iters=0"]
if __name__ == "__main__":
    Trainer(load_config(config, base + [f"checkpoint.save={whole}"])).run()
    if dist.get_rank() == 0:  # the run as it stood at step 2
        shutil.copytree(whole, resumed, ignore=shutil.ignore_patterns("iter_0000004", ".lock"))
        (resumed / "latest_checkpointed_iteration.txt").write_text("2")
    dist.barrier()
    Trainer(load_config(config, base + [f"checkpoint.save={resumed}"])).run()
"""

LAYOUTS = {"single": (1, []), "dp2": (2, []), "tp2": (2, ["parallel.tp=2"]), "pp2": (2, ["parallel.pp=2"])}
DEFAULT = [("bf16", False, "single")]
COVERING = [("bf16", True, "dp2"), ("fp16", True, "tp2"), ("fp16", False, "pp2"),
            ("fp32", True, "pp2"), ("fp32", False, "tp2")]
FULL = list(itertools.product(("bf16", "fp16", "fp32"), (False, True), LAYOUTS))


def steps(run_dir):
    lines = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines() if l.strip()]
    return {l["iteration"]: (l["lm_loss"], l.get("grad_norm"), l["lr"]) for l in lines if "lm_loss" in l
            and not l.get("validation")}


def check_exact_resume(tmp_path, dtype, distributed_optimizer, layout):
    nproc, overrides = LAYOUTS[layout]
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    run_torchrun(nproc, driver, [TINY_CPU, tmp_path, f"precision.dtype={dtype}",
                                 f"parallel.distributed_optimizer={str(distributed_optimizer).lower()}", *overrides],
                 cwd=tmp_path, timeout=600)
    whole, resumed = steps(tmp_path / "whole"), steps(tmp_path / "resumed")
    assert sorted(whole) == [1, 2, 3, 4], whole
    assert resumed == whole, f"{dtype} {layout} distributed_optimizer={distributed_optimizer}: resumed run diverged"
    assert (tmp_path / "resumed" / "latest_checkpointed_iteration.txt").read_text().strip() == "4"
    assert not list((tmp_path / "whole").glob("*.tmp")), "a save left a partial checkpoint"


@pytest.mark.parametrize("dtype, distributed_optimizer, layout", DEFAULT)
def test_the_default_run_saves_and_resumes_exactly(tmp_path, dtype, distributed_optimizer, layout):
    check_exact_resume(tmp_path, dtype, distributed_optimizer, layout)


@pytest.mark.slow
@pytest.mark.parametrize("dtype, distributed_optimizer, layout",
                         [c for c in FULL if c not in DEFAULT] if os.environ.get("SLM_FULL_RESUME_MATRIX")
                         else COVERING)
def test_every_accepted_combination_saves_and_resumes_exactly(tmp_path, dtype, distributed_optimizer, layout):
    check_exact_resume(tmp_path, dtype, distributed_optimizer, layout)


@pytest.mark.slow
def test_a_checkpoint_saved_before_the_first_update_loads_with_its_optimizer_state(tmp_path):
    from conftest import PRETRAIN, run_python

    init = tmp_path / "init"
    run_python([PRETRAIN, "--config", TINY_CPU, "precision.dtype=bf16", "train.iters=0",
                f"checkpoint.save={init}"], cwd=tmp_path)
    run_python([PRETRAIN, "--config", TINY_CPU, "precision.dtype=bf16", "train.iters=2",
                f"checkpoint.load={init}", f"checkpoint.save={tmp_path / 'run'}"], cwd=tmp_path)
    assert sorted(steps(tmp_path / "run")) == [1, 2]


@pytest.mark.slow  # > 10 s: the full suite runs it, the inner loop does not
def test_a_resumed_run_logs_each_iteration_once(tmp_path):
    run = tmp_path / "run"
    train(["train.iters=4", "train.exit_interval=2", f"checkpoint.save={run}"], tmp_path)
    with open(run / "metrics.jsonl", "a") as f:  # steps logged after the checkpoint, then a kill mid-line
        f.write(json.dumps({"iteration": 3, "lm_loss": 9.0}) + "\n" + '{"iteration": 4, "lm_lo')
    train(["train.iters=4", f"checkpoint.save={run}"], tmp_path)
    steps = [l["iteration"] for l in read_metrics(run)[0]]
    assert steps == [1, 2, 3, 4] and all(l.get("lm_loss") != 9.0 for l in read_metrics(run)[0])
