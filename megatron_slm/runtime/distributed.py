"""Process groups, device choice and seeding.

`init_distributed` works under torchrun (reads RANK/WORLD_SIZE/...) and as a plain single
process (a one-rank group on a free local port), picks CUDA+NCCL when a GPU is usable and
CPU+gloo otherwise (then the CPU compatibility layer is switched on), builds Megatron's
model-parallel groups and seeds every RNG identically on all ranks so that data-parallel
replicas are initialised the same way.
"""
from __future__ import annotations

import datetime
import os
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from megatron_slm.config import ConfigError, RuntimeConfig
from megatron_slm.runtime.local_ranks import free_port


_SET_BY_US: set[str] = set()


@dataclass(frozen=True)
class RuntimeInfo:
    device: torch.device
    backend: str
    rank: int
    world_size: int
    local_rank: int

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"


def choose_device(runtime: RuntimeConfig) -> str:
    if runtime.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("runtime.device=cuda but no CUDA device is available here "
                          "(runtime.device=auto uses the CPU when there is none)")
    if runtime.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return runtime.device


def world_size_from_env() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank_from_env() -> int:
    """This process's global rank as torchrun set it (0 for a single process)."""
    return int(os.environ.get("RANK", "0"))


def init_distributed(runtime: RuntimeConfig | None = None, tp: int = 1, pp: int = 1,
                     vpp: int | None = None, seed: int = 1234) -> RuntimeInfo:
    from megatron.core import parallel_state, tensor_parallel

    runtime = runtime or RuntimeConfig()
    device_type = choose_device(runtime)
    backend = runtime.backend if runtime.backend != "auto" else ("nccl" if device_type == "cuda" else "gloo")
    if device_type == "cpu":
        from megatron_slm.runtime import cpu_compat

        cpu_compat.enable()
    if "RANK" not in os.environ:  # a plain `python script.py`: a group of one
        single = dict(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=os.environ.get("MASTER_PORT", str(free_port())))
        _SET_BY_US.update(k for k in single if k not in os.environ)
        os.environ.update(single)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=world,
                                timeout=datetime.timedelta(minutes=runtime.timeout_minutes))
    if not parallel_state.model_parallel_is_initialized():
        parallel_state.initialize_model_parallel(
            tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp,
            virtual_pipeline_model_parallel_size=vpp)
    seed_everything(seed)
    tensor_parallel.model_parallel_cuda_manual_seed(seed)
    return RuntimeInfo(device=device, backend=backend, rank=rank, world_size=world, local_rank=local_rank)


def seed_everything(seed: int) -> None:
    """Same seed on every rank: with CPU initialisation every rank then builds the same full
    weights and keeps its own TP slice, and DP replicas start identical."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def destroy_distributed() -> None:
    from megatron.core import parallel_state

    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    if dist.is_initialized():
        dist.destroy_process_group()
    for key in _SET_BY_US:  # child processes must not inherit a finished group's rendezvous
        os.environ.pop(key, None)
    _SET_BY_US.clear()


def is_rank0() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def print_rank0(*args, **kwargs) -> None:
    if is_rank0():
        print(*args, **kwargs, flush=True)
