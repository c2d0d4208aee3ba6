"""A run directory's checkpoints: keep_last retention, the run lock, the latest pointer."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import PRETRAIN, TINY_CPU, _env, one_error_line, train
from megatron_slm.checkpoint import layout
from megatron_slm.config import ConfigError, load_config


def test_keep_last_below_one_is_refused_and_the_new_checkpoint_always_stays(tmp_path):
    with pytest.raises(ConfigError, match=r"checkpoint.keep_last=-1 is out of range: it must be >= 1"):
        load_config(TINY_CPU, ["checkpoint.keep_last=-1"])
    run = tmp_path / "run"
    train(["train.iters=3", "checkpoint.interval=1", "checkpoint.keep_last=1", f"checkpoint.save={run}"], tmp_path)
    assert sorted(p.name for p in run.glob("iter_*")) == ["iter_0000003"]
    assert layout.latest_iteration(run) == 3


@pytest.mark.slow
def test_a_second_launch_into_a_busy_run_dir_is_refused_and_a_dead_holder_is_not(tmp_path):
    run = tmp_path / "run"
    env = _env()
    first = subprocess.Popen([sys.executable, str(PRETRAIN), "--config", str(TINY_CPU), "train.iters=100000",
                              f"checkpoint.save={run}", "checkpoint.interval=2"], cwd=tmp_path, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not layout.has_checkpoint(run):
            time.sleep(0.3)
        assert layout.has_checkpoint(run), first.stderr.read() if first.poll() is not None else "no checkpoint"
        second = train(["train.iters=100000", f"checkpoint.save={run}"], tmp_path, check=False)
        line = one_error_line(second)
        assert "is in use by another training run" in line and f"pid {first.pid}" in line, line
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # a crash: the lock must not outlive its holder
        first.wait()
    lines_before = len((run / "metrics.jsonl").read_text().splitlines())
    resumed = layout.latest_iteration(run)
    # The same run, sliced: it checkpoints and exits two steps on.
    train(["train.iters=100000", f"train.exit_interval={resumed + 2}", f"checkpoint.save={run}"], tmp_path)
    assert layout.latest_iteration(run) == resumed + 2 and lines_before > 0


def test_a_corrupt_latest_pointer_names_the_intact_checkpoints(tmp_path):
    run = tmp_path / "run"
    for i in (2, 4):
        d = layout.iter_dir(run, i)
        d.mkdir(parents=True)
        (d / layout.STATE).write_text("{}")
        (d / "metadata.json").write_text("{}")
    (run / layout.LATEST).write_text("4\x00garbage")
    with pytest.raises(ConfigError, match=r"complete checkpoints here: iter_0000002, iter_0000004"):
        layout.latest_iteration(run)
