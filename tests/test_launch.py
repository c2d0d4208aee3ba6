"""The SLURM launcher: allocation parsing, torchrun commands, --dry-run, and a preemptible
single-node job run through the real sbatch script with stand-ins for srun and scontrol."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import psutil
import pytest
import yaml

from conftest import REPO, TINY_CPU, _env, _free_port
from megatron_slm.commands import launch
from megatron_slm.config import ConfigError

TWO_NODES = {"SLURM_JOB_ID": "5123", "SLURM_NNODES": "2", "SLURM_NODEID": "1",
             "SLURM_JOB_NODELIST": "gpu-a[07-08]", "SLURM_GPUS_ON_NODE": "8"}


def test_expand_nodelist():
    assert launch.expand_nodelist("gpu-a[07-08]") == ["gpu-a07", "gpu-a08"]
    assert launch.expand_nodelist("login1,n[1-2,5],r[001-002]-ib") == [
        "login1", "n1", "n2", "n5", "r001-ib", "r002-ib"]
    assert launch.expand_nodelist("rack[1-2]-n[1-2]") == ["rack1-n1", "rack1-n2", "rack2-n1", "rack2-n2"]
    with pytest.raises(ConfigError, match="cannot read the range"):
        launch.expand_nodelist("n[a-c]")


def test_resolve_allocation():
    alloc = launch.resolve_allocation(TWO_NODES)
    assert (alloc.nnodes, alloc.node_rank, alloc.nproc_per_node, alloc.master_addr, alloc.port, alloc.world_size) == \
        (2, 1, 8, "gpu-a07", 20000 + 5123, 16)
    gres = {**TWO_NODES, "SLURM_GPUS_ON_NODE": "", "SLURM_GPUS_PER_NODE": "h100:4"}
    assert launch.resolve_allocation(gres).nproc_per_node == 4
    local = launch.resolve_allocation({"CUDA_VISIBLE_DEVICES": "0,1,2"})
    assert local.job_id is None and local.nproc_per_node == 3
    with pytest.raises(ConfigError, match="names 2 hosts but SLURM_NNODES=3"):
        launch.resolve_allocation({**TWO_NODES, "SLURM_NNODES": "3"})
    with pytest.raises(ConfigError, match="SLURM_NODEID"):
        launch.resolve_allocation({**TWO_NODES, "SLURM_NODEID": "x"})


def _dry_run(capsys, argv, env) -> tuple[list[str], dict, str]:
    assert launch.main(["--dry-run", *argv], env=env) == 0
    out = capsys.readouterr().out
    head, config = out.split("# resolved config:\n")
    command = [line for line in head.splitlines() if not line.startswith("#")]
    assert len(command) == 1
    return command[0].split(), yaml.safe_load(config), head


def test_dry_run_multi_node_command_and_config(capsys, tmp_path):
    cmd, cfg, head = _dry_run(capsys, ["--config", str(TINY_CPU), "--runs-dir", str(tmp_path), "parallel.tp=2",
                                       "train.iters=7"], TWO_NODES)
    assert cmd[1:3] == ["-m", "torch.distributed.run"]
    for flag in ("--nnodes=2", "--node_rank=1", "--nproc_per_node=8", "--rdzv_backend=c10d",
                 "--rdzv_endpoint=gpu-a07:25123", "--rdzv_id=5123", "--max_restarts=0"):
        assert flag in cmd, (flag, cmd)
    trainer = cmd.index(launch.TRAINER_MODULE)
    assert cmd[trainer - 1] == "-m" and cmd[trainer + 1:] == ["--config", str(TINY_CPU), "parallel.tp=2", "train.iters=7",
                                 f"checkpoint.save={tmp_path / 'tiny_cpu'}"]
    assert "node 1 of 2" in head and "world size 16" in head
    assert cfg["parallel"]["tp"] == 2 and cfg["train"]["iters"] == 7
    assert cfg["checkpoint"]["save"] == str(tmp_path / "tiny_cpu")

    # A config that names its run directory keeps it; --name only applies otherwise.
    cmd, cfg, _ = _dry_run(capsys, ["--config", str(TINY_CPU), "--name", "x", "checkpoint.save=/scratch/r1"], {})
    assert cfg["checkpoint"]["save"] == "/scratch/r1"
    # one process on one machine: the trainer itself, without a torchrun agent
    assert cmd[1:3] == ["-m", launch.TRAINER_MODULE] and "torch.distributed.run" not in cmd
    cmd, _, _ = _dry_run(capsys, ["--config", str(TINY_CPU), "--nproc-per-node", "2", "parallel.tp=2"], {})
    assert cmd[1:3] == ["-m", "torch.distributed.run"] and "--standalone" in cmd and "--nproc_per_node=2" in cmd


def test_config_list_picks_the_array_task(capsys, tmp_path):
    other = tmp_path / "other.yaml"
    other.write_text(TINY_CPU.read_text())
    listing = tmp_path / "configs.txt"
    listing.write_text(f"# a sweep\n{TINY_CPU}\n\n{other}\n")
    env = {**TWO_NODES, "SLURM_ARRAY_TASK_ID": "1"}
    cmd, cfg, _ = _dry_run(capsys, ["--config-list", str(listing)], env)
    assert cmd[cmd.index("--config") + 1] == str(other) and cfg["checkpoint"]["save"] == "runs/other"
    assert launch.main(["--dry-run", "--config-list", str(listing)], env={**env, "SLURM_ARRAY_TASK_ID": "2"}) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "task 2 but the list has 2 configs" in err


def test_user_errors_are_one_line(capsys):
    assert launch.main(["--dry-run", "--config", str(TINY_CPU), "parallel.tp=4"], env={**TWO_NODES,
                                                                                    "SLURM_GPUS_ON_NODE": "3"}) == 2
    assert "world size 6" in capsys.readouterr().err
    assert launch.main(["--dry-run", "--config", "nope.yaml"], env={}) == 2
    assert "nope.yaml" in capsys.readouterr().err
    assert launch.main(["--srun", "--config", str(TINY_CPU)], env={}) == 2
    assert "SLURM_JOB_ID" in capsys.readouterr().err
    for bad in ("0", "-2"):  # not the automatic count: an explicit 0 is a mistake
        assert launch.main(["--dry-run", "--config", str(TINY_CPU), "--nproc-per-node", bad], env={}) == 2
        assert f"--nproc-per-node must be >= 1, got {bad}" in capsys.readouterr().err


def test_check_finished(capsys, tmp_path):
    run = tmp_path / "run"
    argv = ["--check-finished", "--config", str(TINY_CPU), f"checkpoint.save={run}"]
    assert launch.main([*argv, "train.iters=5"], env={}) == 1
    assert "no checkpoint" in capsys.readouterr().out
    (run / "iter_0000005").mkdir(parents=True)
    (run / "latest_checkpointed_iteration.txt").write_text("5")
    assert launch.main([*argv, "train.iters=5"], env={}) == 0
    assert launch.main([*argv, "train.iters=6"], env={}) == 1
    # A token budget counts in whole steps of global_batch_size x seq_length tokens (8 x 64 here).
    assert launch.main([*argv, "train.iters=null", "train.token_budget=2560"], env={}) == 0
    assert launch.main([*argv, "train.iters=null", "train.token_budget=2561"], env={}) == 1


FAKE_SRUN = """#!/bin/sh
# Stand-in for srun on one node: drop srun's own options, run the task here.
while [ "${1#--}" != "$1" ]; do shift; done
exec "$@"
"""
FAKE_SCONTROL = """#!/bin/sh
echo "$@" >> "$SCONTROL_LOG"
"""


@pytest.mark.slow
def test_sbatch_script_preempts_checkpoints_and_requeues(tmp_path):
    """examples/slurm/pretrain.sbatch under a fake one-node SLURM job with 2 CPU processes:
    SIGUSR1 to the step's task -> checkpoint, exit 0 -> `scontrol requeue <job>`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    save = tmp_path / "runs" / "job"
    env = {**_env(), "PATH": f"{bin_dir}:{_env()['PATH']}", "PYTHON": sys.executable, "SLURM_SUBMIT_DIR": str(REPO),
           "SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "job", "SLURM_NNODES": "1", "SLURM_NODEID": "0",
           "SLURM_JOB_NODELIST": "localhost", "SLURM_GPUS_ON_NODE": "2", "SCONTROL_LOG": str(tmp_path / "scontrol.log")}
    cmd = ["bash", str(REPO / "examples" / "slurm" / "pretrain.sbatch"), str(TINY_CPU), "--port", str(_free_port()),
           "train.iters=100000", "parallel.distributed_optimizer=true", f"checkpoint.save={save}"]
    job = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics = save / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 2):
        time.sleep(0.3)
    task = psutil.Process(job.pid).children()[0]  # what srun started on the node: the per-node launcher
    assert launch.LAUNCHER_MODULE in " ".join(task.cmdline())
    task.send_signal(signal.SIGUSR1)
    out, _ = job.communicate(timeout=120)
    assert job.returncode == 0, out[-4000:]
    assert "--nnodes=1 --node_rank=0 --nproc_per_node=2 --rdzv_backend=c10d --rdzv_endpoint=localhost:" in out
    assert "SIGUSR1: asking 2 training process(es)" in out and "preemption signal" in out
    saved = int((save / "latest_checkpointed_iteration.txt").read_text())
    last = json.loads(metrics.read_text().splitlines()[-1])
    assert saved == last["iteration"] >= 2 and last["consumed_samples"] == 8 * saved
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", "4242"]
    assert f"step {saved} of 100000" in out


def test_relaunching_a_finished_run_returns_at_once(capsys, tmp_path, monkeypatch):
    """A resumed sweep relaunches every run: a finished one must not start the trainer again (that
    would rebuild the model only to validate and score it a second time)."""
    run = tmp_path / "run"
    (run / "iter_0000005").mkdir(parents=True)
    (run / "latest_checkpointed_iteration.txt").write_text("5")
    started = []
    monkeypatch.setattr(launch, "run", lambda cmd, direct=False: started.append(cmd) or 0)
    argv = ["--config", str(TINY_CPU), f"checkpoint.save={run}"]
    assert launch.main([*argv, "train.iters=5"], env={}) == 0
    assert "nothing to do, run complete" in capsys.readouterr().out and not started
    assert launch.main([*argv, "train.iters=6"], env={}) == 0  # one more step planned: it trains
    assert len(started) == 1 and "megatron_slm.train" in started[0]
