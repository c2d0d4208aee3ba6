"""Launch a training run with torchrun on this machine or on a SLURM allocation.

    python tools/launch.py --config X [overrides]                  # this machine, all its GPUs
    srun --ntasks-per-node=1 python tools/launch.py --config X     # inside sbatch: one launcher per node
    python tools/launch.py --dry-run --config X                    # print the command and resolved config
    python tools/launch.py --check-finished --config X             # exit 0 if the run is complete, 1 if not

The SLURM variables of the job (SLURM_NNODES, SLURM_NODEID, SLURM_JOB_NODELIST, SLURM_JOB_ID,
SLURM_GPUS_ON_NODE) become torchrun's node count, node rank and c10d rendezvous on the first
node of the allocation; without them the run is a standalone single-node job. A single process
on a single machine (a CPU run, one GPU) starts the trainer directly, without a torchrun agent.

Preemption: SLURM's `--signal=USR1@T` reaches this launcher; it passes SIGUSR1 to the training
processes (torchrun itself ignores it, else it would die of it), the trainer checkpoints at the
next step and exits 0. `--check-finished` then tells the batch script whether to requeue; the
requeued job resumes from `checkpoint.save` (the trainer's automatic resume). SIGTERM/SIGINT go
to torchrun, which shuts the workers down.

Run layout: `checkpoint.save` from the config, else `<runs-dir>/<name>` (name: --name, else the
config file's stem), so every job of one run resumes from the same directory.
"""
from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence

import yaml

from megatron_slm.config import ConfigError, SLMConfig, load_config
from megatron_slm.console import error

# torchrun starts the installed package's trainer module, so no checkout path is needed
TRAINER_MODULE = "megatron_slm.train"
LAUNCHER_MODULE = "megatron_slm.commands.launch"
DEFAULT_PORT_BASE = 20000  # rendezvous port = base + job id mod 20000: jobs sharing a node differ


@dataclass(frozen=True)
class Allocation:
    nnodes: int
    node_rank: int
    nproc_per_node: int
    master_addr: str
    port: int
    job_id: Optional[str]  # None: not under SLURM

    @property
    def world_size(self) -> int:
        return self.nnodes * self.nproc_per_node


def expand_nodelist(nodelist: str) -> list[str]:
    """SLURM's compressed host list -> host names: 'gpu[01-03,7],login1' -> gpu01 gpu02 gpu03 gpu7 login1."""
    hosts: list[str] = []
    for item in re.findall(r"[^,\[]+(?:\[[^\]]*\][^,\[]*)*", nodelist):
        hosts += _expand_one(item)
    if not hosts:
        raise ConfigError(f"SLURM_JOB_NODELIST={nodelist!r}: no host names in it")
    return hosts


def _expand_one(item: str) -> list[str]:
    match = re.match(r"([^\[]*)\[([^\]]*)\](.*)", item)
    if not match:
        return [item]
    prefix, ranges, rest = match.groups()
    out = []
    for part in ranges.split(","):
        lo, _, hi = part.partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            raise ConfigError(f"SLURM_JOB_NODELIST: cannot read the range {part!r} in {item!r}")
        for n in range(int(lo), int(hi or lo) + 1):
            out += [f"{prefix}{n:0{len(lo)}d}{tail}" for tail in _expand_one(rest)]
    return out


def _int_var(env: Mapping[str, str], name: str) -> int:
    value = env[name]
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not an integer") from None


def _gpus_on_node(env: Mapping[str, str]) -> Optional[int]:
    """GPUs this node got: SLURM_GPUS_ON_NODE, else SLURM_GPUS_PER_NODE ('8' or 'h100:8'), else
    CUDA_VISIBLE_DEVICES."""
    if env.get("SLURM_GPUS_ON_NODE"):
        return _int_var(env, "SLURM_GPUS_ON_NODE")
    per_node = env.get("SLURM_GPUS_PER_NODE")
    if per_node:
        count = per_node.split("(")[0].rsplit(":", 1)[-1]
        if count.isdigit():
            return int(count)
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible:
        return len([d for d in visible.split(",") if d.strip()])
    return None


def _local_gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except ImportError:
        return 0


def resolve_allocation(env: Mapping[str, str], nproc_per_node: Optional[int] = None,
                       port: Optional[int] = None) -> Allocation:
    """Where this launcher runs: a node of a SLURM job, or a standalone machine."""
    nproc = nproc_per_node if nproc_per_node is not None else (_gpus_on_node(env) or _local_gpu_count() or 1)
    if nproc < 1:
        raise ConfigError(f"--nproc-per-node must be >= 1, got {nproc}")
    if "SLURM_JOB_ID" not in env:
        return Allocation(1, 0, nproc, "127.0.0.1", port or 0, None)
    job_id = env["SLURM_JOB_ID"]
    nnodes = _int_var(env, "SLURM_NNODES") if "SLURM_NNODES" in env else _int_var(env, "SLURM_JOB_NUM_NODES")
    node_rank = _int_var(env, "SLURM_NODEID") if "SLURM_NODEID" in env else 0
    nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    if not nodelist:
        raise ConfigError("SLURM_JOB_NODELIST is not set: run the launcher inside a SLURM job (sbatch/srun)")
    hosts = expand_nodelist(nodelist)
    if len(hosts) != nnodes:
        raise ConfigError(f"SLURM_JOB_NODELIST={nodelist!r} names {len(hosts)} hosts but SLURM_NNODES={nnodes}")
    if not 0 <= node_rank < nnodes:
        raise ConfigError(f"SLURM_NODEID={node_rank} is outside 0..{nnodes - 1}")
    if port is None:
        digits = re.sub(r"\D", "", job_id) or "0"
        port = DEFAULT_PORT_BASE + int(digits) % 20000
    return Allocation(nnodes, node_rank, nproc, hosts[0], port, job_id)


def run_dir_overrides(config: Optional[str], overrides: Sequence[str], name: Optional[str],
                      runs_dir: str) -> list[str]:
    """The overrides plus `checkpoint.save=<runs_dir>/<name>` when the config sets no run directory."""
    cfg = load_config(config, overrides)
    if cfg.checkpoint.save:
        return list(overrides)
    stem = name or (Path(config).stem if config else "run")
    return [*overrides, f"checkpoint.save={Path(runs_dir) / stem}"]


def single_process(alloc: Allocation) -> bool:
    """One process on one machine: the trainer runs without a torchrun agent (which would only
    cost another interpreter and a torch import, ~4 s of CPU per run in a sweep of tiny runs)."""
    return alloc.job_id is None and alloc.world_size == 1


def torchrun_command(alloc: Allocation, config: Optional[str], overrides: Sequence[str],
                     python: str = sys.executable) -> list[str]:
    """The command that starts the training processes of this node."""
    if single_process(alloc):
        cmd = [python]
    elif alloc.job_id is None:
        cmd = [python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={alloc.nproc_per_node}"]
    else:
        cmd = [python, "-m", "torch.distributed.run", f"--nnodes={alloc.nnodes}", f"--node_rank={alloc.node_rank}",
               f"--nproc_per_node={alloc.nproc_per_node}", "--rdzv_backend=c10d",
               f"--rdzv_endpoint={alloc.master_addr}:{alloc.port}", f"--rdzv_id={alloc.job_id}",
               "--max_restarts=0"]  # a failed rank fails the job; the requeue resumes it
    cmd += ["-m", TRAINER_MODULE]
    if config:
        cmd += ["--config", str(config)]
    return cmd + list(overrides)


def check_layout(cfg: SLMConfig, alloc: Allocation) -> None:
    p = cfg.parallel
    if alloc.world_size % (p.tp * p.pp):
        raise ConfigError(f"world size {alloc.world_size} ({alloc.nnodes} node(s) x {alloc.nproc_per_node} "
                          f"processes) is not divisible by parallel.tp={p.tp} x parallel.pp={p.pp}")


def run_finished(cfg: SLMConfig) -> tuple[bool, str]:
    """(complete?, why) from the run directory's latest checkpoint and the planned step count."""
    from megatron_slm.checkpoint.layout import has_checkpoint, latest_iteration
    from megatron_slm.training.plan import planned_steps

    total = planned_steps(cfg)
    if not has_checkpoint(cfg.checkpoint.save):
        return False, f"no checkpoint in {cfg.checkpoint.save} yet (0 of {total} steps)"
    done = latest_iteration(cfg.checkpoint.save)
    return done >= total, f"{cfg.checkpoint.save}: step {done} of {total}"


def _finished_before(cfg: SLMConfig) -> bool:
    """A relaunched finished run (a resumed sweep) has nothing to train or score again. A run
    without a checkpoint is not checked further (that would import torch for nothing)."""
    from megatron_slm.checkpoint.layout import has_checkpoint

    if not has_checkpoint(cfg.checkpoint.save):
        return False
    done, why = run_finished(cfg)
    if done:
        print(f"[launch] nothing to do, run complete: {why}", flush=True)
    return done


def _worker_pids(torchrun_pid: int) -> list[int]:
    """The training processes: torchrun's direct children (their own children are checkpoint
    writers, which must not get the signal)."""
    import psutil

    try:
        return [c.pid for c in psutil.Process(torchrun_pid).children(recursive=False)]
    except psutil.NoSuchProcess:
        return []


def run(cmd: list[str], direct: bool = False) -> int:
    """Run torchrun (or, `direct`, the one trainer process), forwarding SIGUSR1 to the training
    processes and SIGTERM/SIGINT to the process started."""
    def ignore_usr1():
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # inherited by torchrun; workers set their own

    # A session of its own: a signal to this launcher's process group reaches torchrun only via us.
    proc = subprocess.Popen(cmd, preexec_fn=ignore_usr1, start_new_session=True)

    def forward_usr1(signum, frame):
        pids = [proc.pid] if direct else _worker_pids(proc.pid)
        print(f"[launch] SIGUSR1: asking {len(pids)} training process(es) to checkpoint and exit", flush=True)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGUSR1)
            except ProcessLookupError:
                pass

    def forward_term(signum, frame):
        print(f"[launch] {signal.Signals(signum).name}: stopping {'the trainer' if direct else 'torchrun'}", flush=True)
        proc.send_signal(signum)

    previous = {s: signal.signal(s, h) for s, h in ((signal.SIGUSR1, forward_usr1), (signal.SIGTERM, forward_term),
                                                     (signal.SIGINT, forward_term))}
    try:
        return proc.wait()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def describe(alloc: Allocation, cmd: list[str], cfg: SLMConfig) -> str:
    where = (f"SLURM job {alloc.job_id}: node {alloc.node_rank} of {alloc.nnodes}, rendezvous "
             f"{alloc.master_addr}:{alloc.port}" if alloc.job_id else "standalone (no SLURM job)")
    return (f"# {where}; {alloc.nproc_per_node} process(es) per node, world size {alloc.world_size}\n"
            f"# run directory: {cfg.checkpoint.save}\n"
            f"{shlex.join(cmd)}\n"
            f"# resolved config:\n{yaml.safe_dump(cfg.to_dict(), sort_keys=False)}")


def config_from_list(path: str, index: Optional[str]) -> str:
    """Line `index` (0-based; SLURM_ARRAY_TASK_ID) of a configs list such as the scaling
    planner's configs.txt; blank lines and # comments are skipped."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"--config-list {path}: file does not exist")
    if index is None or not index.isdigit():
        raise ConfigError(f"--config-list needs --index or SLURM_ARRAY_TASK_ID (got {index!r})")
    entries = [line.strip() for line in file.read_text().splitlines() if line.strip() and not line.startswith("#")]
    i = int(index)
    if i >= len(entries):
        raise ConfigError(f"--config-list {path}: task {i} but the list has {len(entries)} configs (0..{len(entries) - 1})")
    return entries[i]


def _parser():
    import argparse

    parser = argparse.ArgumentParser(
        prog="launch.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--config", help="training YAML (examples/configs/...)")
    which.add_argument("--config-list", help="a file of config paths, one per line; this job trains line --index "
                                             "(default: $SLURM_ARRAY_TASK_ID), e.g. the scaling planner's configs.txt")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides")
    parser.add_argument("--index", help="which --config-list line (0-based)")
    parser.add_argument("--name", help="run name: the run directory is <runs-dir>/<name> unless the config sets "
                                       "checkpoint.save (default: the config file's stem)")
    parser.add_argument("--runs-dir", default="runs", help="parent of run directories (default: runs)")
    parser.add_argument("--nproc-per-node", type=int,
                        help="processes per node (default: $SLURM_GPUS_ON_NODE, else the visible GPUs, else 1)")
    parser.add_argument("--port", type=int, help="rendezvous port (default: 20000 + job id mod 20000)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="print the torchrun command and the resolved config")
    mode.add_argument("--check-finished", action="store_true",
                      help="exit 0 when the run's latest checkpoint reached its last step, 1 when not")
    mode.add_argument("--srun", action="store_true",
                      help="batch-script mode: start one launcher per node with srun, then requeue the job "
                           "(scontrol requeue) if the run stopped early (preemption signal, train.exit_*)")
    return parser


def _srun_and_requeue(args, config: str, overrides: list[str], cfg: SLMConfig, env: Mapping[str, str]) -> int:
    inner = [sys.executable, "-m", LAUNCHER_MODULE, "--config", config, *overrides]
    for flag, value in (("--nproc-per-node", args.nproc_per_node), ("--port", args.port)):
        if value is not None:
            inner += [flag, str(value)]
    done, why = run_finished(cfg)
    if done:  # a resubmitted sweep: nothing left to train
        print(f"[launch] nothing to do, run complete: {why}", flush=True)
        return 0
    cmd = ["srun", "--ntasks-per-node=1", "--kill-on-bad-exit=1", *inner]
    print(f"[launch] {shlex.join(cmd)}", flush=True)
    rc = subprocess.call(cmd)
    if rc != 0:
        print(f"[launch] training failed (exit {rc}); resubmit the same command to resume from "
              f"{cfg.checkpoint.save}", flush=True)
        return rc
    done, why = run_finished(cfg)
    if done:
        print(f"[launch] run complete: {why}", flush=True)
        return 0
    job = env.get("SLURM_JOB_ID")
    print(f"[launch] run stopped early ({why}); requeueing job {job}", flush=True)
    return subprocess.call(["scontrol", "requeue", str(job)])


def main(argv: Optional[Sequence[str]] = None, env: Optional[Mapping[str, str]] = None) -> int:
    args = _parser().parse_args(argv)
    env = os.environ if env is None else env
    try:
        config = args.config or config_from_list(args.config_list, args.index or env.get("SLURM_ARRAY_TASK_ID"))
        if not Path(config).is_file():
            raise ConfigError(f"config file {config!r} does not exist")
        overrides = run_dir_overrides(config, args.overrides, args.name, args.runs_dir)
        cfg = load_config(config, overrides)
        if args.check_finished:
            done, why = run_finished(cfg)
            print(("finished: " if done else "not finished: ") + why)
            return 0 if done else 1
        if args.srun:
            if "SLURM_JOB_ID" not in env:
                raise ConfigError("--srun runs inside a SLURM batch job (no SLURM_JOB_ID here)")
            return _srun_and_requeue(args, config, overrides, cfg, env)
        alloc = resolve_allocation(env, args.nproc_per_node, args.port)
        check_layout(cfg, alloc)
        cmd = torchrun_command(alloc, config, overrides)
    except ConfigError as e:
        error(e)
        return 2
    if args.dry_run:
        print(describe(alloc, cmd, cfg), end="")
        return 0
    try:
        if alloc.job_id is None and _finished_before(cfg):
            return 0
    except ConfigError as e:
        error(e)
        return 2
    print(describe(alloc, cmd, cfg).split("# resolved config:")[0], end="", flush=True)
    direct = single_process(alloc)
    rc = run(cmd, direct)
    print(f"[launch] {'the trainer' if direct else 'torchrun'} exited with {rc}", flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
