"""Real multi-process training on CPU + gloo: layouts, parity, resume, crash safety, preemption."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import DRIVER_MAIN, PRETRAIN, TINY_CPU, _env, read_metrics, run_python, run_torchrun

pytestmark = pytest.mark.slow
BASE = ["--config", TINY_CPU]


def losses(run_dir: Path) -> list[float]:
    train, _ = read_metrics(run_dir)
    return [line["lm_loss"] for line in train]


@pytest.fixture(scope="module")
def init_ckpt(tmp_path_factory) -> Path:
    """Weights at step 0, shared by every layout so they start from identical parameters."""
    out = tmp_path_factory.mktemp("init")
    run_python([PRETRAIN, *BASE, "train.iters=0", f"checkpoint.save={out / 'ckpt'}"], cwd=out)
    return out / "ckpt"


def test_layout_parity(init_ckpt, tmp_path):
    """Same weights, data and fp32: TP=1, TP=2, PP=2 and DP=2 give the same losses."""
    common = [*BASE, "train.iters=3", f"checkpoint.load={init_ckpt}", "checkpoint.load_optimizer=false"]
    layouts = {"tp1": (1, []), "tp2": (2, ["parallel.tp=2"]), "pp2": (2, ["parallel.pp=2"]),
               "dp2": (2, ["parallel.distributed_optimizer=true"])}
    results = {}
    for name, (nproc, extra) in layouts.items():
        cwd = tmp_path / name
        cwd.mkdir()
        run_torchrun(nproc, PRETRAIN, common + extra, cwd=cwd)
        results[name] = losses(cwd)
    reference = results.pop("tp1")
    assert len(reference) == 3
    for name, values in results.items():
        for step, (a, b) in enumerate(zip(reference, values), 1):
            assert abs(a - b) <= 1e-4 * abs(a), f"{name} step {step}: {b} vs tp1 {a}"


def test_tp2_pp2_dp2_distributed_optimizer_learns(init_ckpt, tmp_path):
    run_torchrun(8, PRETRAIN, [*BASE, "train.iters=8", "parallel.tp=2", "parallel.pp=2",
                               "parallel.distributed_optimizer=true", f"checkpoint.load={init_ckpt}",
                               "checkpoint.load_optimizer=false"], cwd=tmp_path, timeout=600)
    values = losses(tmp_path)
    assert len(values) == 8 and values[-1] < values[0] - 0.05, values


def test_exact_resume_and_resume_into_another_layout(tmp_path):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    dist_opt = "parallel.distributed_optimizer=true"
    run_python([PRETRAIN, *BASE, "train.iters=6", dist_opt, f"checkpoint.save={whole}"], cwd=tmp_path)
    interrupted = [PRETRAIN, *BASE, "train.iters=6", dist_opt, "train.exit_interval=3", f"checkpoint.save={parts}"]
    run_python(interrupted, cwd=tmp_path)
    assert (parts / "latest_checkpointed_iteration.txt").read_text() == "3"
    run_python(interrupted, cwd=tmp_path)  # the same command resumes automatically
    assert losses(parts) == losses(whole), "resumed run diverged from the uninterrupted one"
    train, _ = read_metrics(parts)
    assert [l["consumed_samples"] for l in train] == [8 * i for i in range(1, 7)]

    # Continue the TP1 run at TP=2 x PP=2 with interleaved (virtual) pipeline stages and the
    # distributed optimizer: weights and optimizer state reshard on load.
    moved = tmp_path / "moved"
    run_torchrun(4, PRETRAIN, [*BASE, "train.iters=14", "parallel.tp=2", "parallel.pp=2", "parallel.vpp=2",
                               dist_opt, f"checkpoint.load={parts}",
                               f"checkpoint.save={moved}"], cwd=tmp_path, timeout=600)
    train, _ = read_metrics(moved)
    assert train[0]["iteration"] == 7 and train[-1]["iteration"] == 14
    _, moved_valid = read_metrics(moved)
    _, whole_valid = read_metrics(whole)
    assert moved_valid[-1]["lm_loss"] < whole_valid[-1]["lm_loss"], "no further progress after resharding"


KILL_DRIVER = """
import os, signal, sys
from megatron_slm.checkpoint import dist as checkpointing
calls = {"n": 0}
original = checkpointing._finalize
def finalize_or_die(*args, **kwargs):
    calls["n"] += 1
    if calls["n"] == 2:  # the second save: shards written, not yet renamed into place
        os.kill(os.getpid(), signal.SIGKILL)
    return original(*args, **kwargs)
checkpointing._finalize = finalize_or_die
""" + DRIVER_MAIN


def test_kill_during_save_keeps_previous_checkpoint(tmp_path):
    driver = tmp_path / "driver.py"
    driver.write_text(KILL_DRIVER)
    save = tmp_path / "run"
    args = [*BASE, "train.iters=6", "checkpoint.interval=2", f"checkpoint.save={save}"]
    # Output to a file, not a pipe: the checkpoint writer's helper processes outlive the
    # killed trainer and would hold a pipe open. Their process group is cleaned up after.
    with open(tmp_path / "killed.log", "w") as log:
        proc = subprocess.Popen([sys.executable, driver, *map(str, args)], cwd=tmp_path, env=_env(),
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        returncode = proc.wait(timeout=300)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    assert returncode == -signal.SIGKILL, (tmp_path / "killed.log").read_text()[-2000:]
    assert (save / "latest_checkpointed_iteration.txt").read_text() == "2"
    assert (save / "iter_0000004.tmp").is_dir() and not (save / "iter_0000004").exists()
    run_python([PRETRAIN, *args], cwd=tmp_path)  # resumes from step 2 and finishes
    train, _ = read_metrics(save)
    assert [l["iteration"] for l in train][-4:] == [3, 4, 5, 6]
    assert (save / "latest_checkpointed_iteration.txt").read_text() == "6"
    assert not (save / "iter_0000004.tmp").exists()


def test_sigterm_checkpoints_and_exits_cleanly(tmp_path):
    save = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, PRETRAIN, *BASE, "train.iters=100000", f"checkpoint.save={save}"],
                            cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics = save / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 2):
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out[-3000:]
    assert "preemption signal" in out
    last = json.loads(metrics.read_text().splitlines()[-1])
    saved = int((save / "latest_checkpointed_iteration.txt").read_text())
    assert saved == last["iteration"] and saved >= 2


def _catches(pid: int, sig: int) -> bool:
    """Whether process `pid` has a handler for `sig` (Linux: SigCgt in /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    return False


def test_preemption_signal_during_startup_is_not_fatal(tmp_path):
    """SIGUSR1 while the job is still importing/initialising: the first step checkpoints, exit 0."""
    save = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, PRETRAIN, *BASE, "train.iters=100000", f"checkpoint.save={save}"],
                            cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 60
    while not _catches(proc.pid, signal.SIGUSR1) and time.time() < deadline:
        time.sleep(0.01)
    assert not (save / "metrics.jsonl").exists(), "the signal was meant to arrive before training started"
    proc.send_signal(signal.SIGUSR1)
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, out[-3000:]
    assert (save / "latest_checkpointed_iteration.txt").read_text() == "1"
