"""Fault tolerance on CPU: a rank killed mid-run, non-finite losses, a disk that fills up during
a save. Faults are injected by driver scripts that monkeypatch the real code from outside."""
from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from conftest import DRIVER_MAIN, PRETRAIN, TINY_CPU, _env, _free_port, read_metrics, run_python, run_torchrun

pytestmark = pytest.mark.slow
BASE = ["--config", TINY_CPU]


def _latest(save: Path) -> int:
    return int((save / "latest_checkpointed_iteration.txt").read_text())


def _wait_for_iteration(metrics: Path, iteration: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists():
            lines = [json.loads(l) for l in metrics.read_text().splitlines() if l.strip()]
            if any(l.get("iteration", 0) >= iteration and "consumed_samples" in l for l in lines):
                return
        time.sleep(0.05)
    raise AssertionError(f"no training line for iteration {iteration} in {metrics}")


def test_killed_rank_fails_fast_and_the_next_launch_loses_nothing(tmp_path):
    save = tmp_path / "run"
    args = [*BASE, "train.iters=7", "checkpoint.interval=4", "parallel.distributed_optimizer=true",
            "runtime.timeout_minutes=1", f"checkpoint.save={save}"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", str(PRETRAIN), *map(str, args)]
    job = subprocess.Popen(cmd, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    t0 = time.time()
    _wait_for_iteration(save / "metrics.jsonl", 5, job)  # past the step-4 checkpoint, before the end
    workers = psutil.Process(job.pid).children()
    rank1 = next(w for w in workers if w.environ().get("RANK") == "1")
    killed_at = time.time()
    rank1.send_signal(signal.SIGKILL)
    out, _ = job.communicate(timeout=120)
    failed_after = time.time() - killed_at
    assert job.returncode != 0, out[-3000:]
    assert failed_after < 40, f"the job took {failed_after:.0f}s to fail (collective timeout is 60s)"
    saved = _latest(save)
    assert saved == 4, saved
    crashed = [l["iteration"] for l in read_metrics(save)[0]]
    assert crashed[-1] >= 5, crashed  # steps past the checkpoint were logged before the kill

    run_torchrun(2, PRETRAIN, args, cwd=tmp_path)  # the same command resumes
    lines = read_metrics(save)[0]
    # Lines of steps the checkpoint does not hold are dropped on resume: each step is logged once.
    assert [l["iteration"] for l in lines] == [1, 2, 3, 4, 5, 6, 7]
    assert [l["consumed_samples"] for l in lines[4:]] == [40, 48, 56]
    assert _latest(save) == 7
    print(f"first launch {killed_at - t0:.0f}s, failed {failed_after:.1f}s after the kill, "
          f"relaunch {time.time() - killed_at - failed_after:.0f}s")


POISON_DRIVER = """
import os, sys
from megatron_slm.training import loss as loss_module, trainer as trainer_module
POISON = {int(s) for s in os.environ["POISON_STEPS"].split(",")}
VALUE = float(os.environ["POISON_VALUE"])
step = {"now": 0}
original_train_step = trainer_module.Trainer.train_step
def tracking_train_step(self):
    step["now"] = self.iteration + 1
    return original_train_step(self)
trainer_module.Trainer.train_step = tracking_train_step
original_loss = loss_module.loss_func
def poisoned_loss(loss_mask, modality, output_tensor, **kwargs):
    if step["now"] in POISON:  # every microbatch of a poisoned step: non-finite loss and gradients
        output_tensor = output_tensor * VALUE
    return original_loss(loss_mask, modality, output_tensor, **kwargs)
loss_module.loss_func = poisoned_loss
""" + DRIVER_MAIN


def _poisoned_run(tmp_path: Path, steps: str, value: str, args: list[str]) -> subprocess.CompletedProcess:
    driver = tmp_path / "poison.py"
    driver.write_text(POISON_DRIVER)
    env = {**_env(), "POISON_STEPS": steps, "POISON_VALUE": value}
    return subprocess.run([sys.executable, str(driver), *map(str, args)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)


def test_nan_loss_stops_with_one_error_line_and_keeps_the_checkpoint(tmp_path):
    save = tmp_path / "run"
    proc = _poisoned_run(tmp_path, "3", "nan", [*BASE, "train.iters=6", "checkpoint.interval=2",
                                                 "train.nan_policy=stop", f"checkpoint.save={save}"])
    assert proc.returncode == 3, proc.stderr[-3000:]
    errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert errors == ["error: non-finite loss nan at step 3; stopping (train.nan_policy=stop). "
                      "The last checkpoint is intact."]
    assert "Traceback" not in proc.stderr
    assert _latest(save) == 2 and (save / "iter_0000002" / "slm_state.json").is_file()
    assert not list(save.glob("iter_*.tmp"))
    assert [l["iteration"] for l in read_metrics(save)[0]] == [1, 2]


def test_inf_loss_is_skipped_then_too_many_in_a_row_stop(tmp_path):
    # Step 3 is skipped and training goes on; steps 5 and 6 are two skips in a row > max 1.
    proc = _poisoned_run(tmp_path, "3,5,6", "inf", [*BASE, "train.iters=8", "train.nan_policy=skip",
                                                     "train.max_skipped_steps=1"])
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "error: 2 consecutive non-finite steps (train.max_skipped_steps)" in proc.stderr
    train, _ = read_metrics(tmp_path)
    by_step = {l["iteration"]: l for l in train}
    assert sorted(by_step) == [1, 2, 3, 4, 5]
    assert by_step[3]["skipped"] is True and by_step[3]["lm_loss"] is None  # non-finite is logged as null
    assert by_step[3]["grad_norm"] is None
    for i in (1, 2, 4):
        assert not by_step[i].get("skipped") and by_step[i]["lm_loss"] < 10 and by_step[i]["grad_norm"] > 0
    assert by_step[5]["skipped"] is True
    # A skipped step consumes its data but does not advance the learning-rate schedule: after step 4
    # the scheduler has taken 3 steps of 8 samples (1, 2, 4), not 4. tiny_cpu: 2 warmup steps, then
    # cosine from 3e-3 to 3e-4 over the remaining 6 steps (48 samples).
    assert by_step[4]["consumed_samples"] == 32
    assert by_step[4]["lr"] == pytest.approx(3e-4 + 2.7e-3 * 0.5 * (1 + math.cos(math.pi * 8 / 48)))


ENOSPC_DRIVER = """
import errno, functools
from megatron.core.dist_checkpointing.strategies import filesystem_async
from megatron_slm.checkpoint import dist as checkpointing
saves = {"n": 0}
original_save = checkpointing.Checkpointer.save
def counting_save(self, *args, **kwargs):
    saves["n"] += 1
    return original_save(self, *args, **kwargs)
checkpointing.Checkpointer.save = counting_save
original_write = filesystem_async._write_item
@functools.wraps(original_write)  # the writer inspects its signature
def write_or_fill_disk(*args, **kwargs):
    if saves["n"] == 2:  # the second save: the disk is full (runs in the forked writer process)
        raise OSError(errno.ENOSPC, "No space left on device")
    return original_write(*args, **kwargs)
filesystem_async._write_item = write_or_fill_disk
""" + DRIVER_MAIN


def test_disk_full_during_save_keeps_the_previous_checkpoint(tmp_path):
    driver = tmp_path / "enospc.py"
    driver.write_text(ENOSPC_DRIVER)
    save = tmp_path / "run"
    args = [*BASE, "train.iters=4", "checkpoint.interval=2", f"checkpoint.save={save}"]
    proc = run_python([driver, *args], cwd=tmp_path, check=False)
    assert proc.returncode == 4, proc.stderr[-3000:]
    assert (f"saving iteration 4 to {save} failed (RuntimeError: Worker failure: [Errno 28] No space left on "
            f"device); the previous checkpoint (iteration 2) is intact") in proc.stderr
    assert _latest(save) == 2
    assert sorted(p.name for p in save.glob("iter_*")) == ["iter_0000002"]  # no partial iter_0000004.tmp

    out = run_python([PRETRAIN, *args], cwd=tmp_path).stdout  # space is back: resume from step 2
    assert "(iteration 2); continuing at step 2" in out
    train, _ = read_metrics(save)
    assert [l["iteration"] for l in train][-2:] == [3, 4] and _latest(save) == 4
