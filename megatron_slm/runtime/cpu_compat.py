"""Run Megatron-Core on CPU + gloo: the compatibility layer.

Megatron-Core assumes CUDA throughout (devices, RNG tracker, streams, type strings). This
module patches exactly the behaviours a training step, the pipeline schedules, the
distributed optimizer and dist checkpointing touch, so that TP/PP/DP layouts can be debugged
on a laptop or CI. `enable()` is only ever called when the run's device is the CPU; it
refuses to activate when CUDA is in use, so a GPU run can never be altered by it.

Each patch says why it exists. Keep the list short: prefer config switches (fusions off,
explicit attention masks, no sequence parallel) over patches.
"""
from __future__ import annotations

import contextlib
import types

import torch
from torch.overrides import TorchFunctionMode

_ENABLED = False
_MODE: "_CudaAsCpu | None" = None
# Stand-in for the CUDA default generator: Megatron's RNG tracker saves, forks and restores
# "CUDA" RNG states; a separate CPU generator keeps those semantics without touching the
# real CPU RNG that weight initialisation uses.
_FAKE_CUDA_GEN = torch.Generator(device="cpu")


def _is_cuda_device(dev) -> bool:
    if isinstance(dev, bool):
        return False
    if isinstance(dev, int):  # torch.cuda.current_device() -> 0 below, used as a device
        return True
    if isinstance(dev, str):
        return dev.startswith("cuda")
    if isinstance(dev, torch.device):
        return dev.type == "cuda"
    return False


_CPU_TYPE_TO_CUDA = {
    # clip_grads and the distributed optimizer select tensors by `t.type() == 'torch.cuda.FloatTensor'`.
    "torch.FloatTensor": "torch.cuda.FloatTensor",
    "torch.HalfTensor": "torch.cuda.HalfTensor",
    "torch.BFloat16Tensor": "torch.cuda.BFloat16Tensor",
    "torch.DoubleTensor": "torch.cuda.DoubleTensor",
    "torch.LongTensor": "torch.cuda.LongTensor",
    "torch.IntTensor": "torch.cuda.IntTensor",
    "torch.ByteTensor": "torch.cuda.ByteTensor",
}


class _CudaAsCpu(TorchFunctionMode):
    """Rewrites CUDA placement requests to the CPU at the torch-function level.

    Megatron allocates buffers with `device=torch.cuda.current_device()` or `"cuda"`, moves
    tensors with `.cuda()` / `.to("cuda")`, and asks for pinned memory; all of these become CPU
    operations here.
    """

    def __torch_function__(self, func, types_, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is torch.Tensor.cuda:
            return args[0]
        if func is torch.Tensor.pin_memory:  # pinning needs a CUDA context
            return args[0]
        if func is torch.Tensor.type and len(args) == 1 and not kwargs:
            name = func(*args)
            return _CPU_TYPE_TO_CUDA.get(name, name)
        if "device" in kwargs and _is_cuda_device(kwargs["device"]):
            kwargs["device"] = "cpu"
        if kwargs.get("pin_memory"):
            kwargs["pin_memory"] = False
        if func is torch.Tensor.to and len(args) > 1 and _is_cuda_device(args[1]):
            args = (args[0], "cpu", *args[2:])
        return func(*args, **kwargs)


class _NoOpStream:
    """torch.cuda.Stream/Event stand-in: the CPU executes in order, nothing to wait for."""

    def __init__(self, *a, **k):
        pass

    def wait_stream(self, *a, **k):
        pass

    def wait_event(self, *a, **k):
        pass

    def record_event(self, *a, **k):
        return _NoOpStream()

    def record(self, *a, **k):
        pass

    def synchronize(self):
        pass

    def query(self):
        return True

    def elapsed_time(self, other):
        return 0.0


def _fake_get_state(*a, **k):
    return _FAKE_CUDA_GEN.get_state()


def _fake_set_state(state, *a, **k):
    _FAKE_CUDA_GEN.set_state(state)


def _fake_seed(seed, *a, **k):
    _FAKE_CUDA_GEN.manual_seed(int(seed))


def enable() -> None:
    """Activate the layer for this process (idempotent). Only valid for CPU runs."""
    global _ENABLED, _MODE
    if _ENABLED:
        return
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        raise RuntimeError("the CPU compatibility layer must not be enabled in a CUDA run")
    cuda = torch.cuda
    # current_device() raises on CPU-only builds; Megatron uses it as a placement, which
    # _CudaAsCpu maps back to the CPU.
    cuda.current_device = lambda: 0
    cuda.device_count = lambda: 1
    cuda.set_device = lambda *a, **k: None
    # Megatron synchronises around timers, p2p and checkpoint I/O; the CPU is synchronous.
    cuda.synchronize = lambda *a, **k: None
    cuda.Stream = _NoOpStream
    cuda.Event = _NoOpStream
    cuda.current_stream = lambda *a, **k: _NoOpStream()
    cuda.default_stream = lambda *a, **k: _NoOpStream()
    cuda.stream = lambda *a, **k: contextlib.nullcontext()
    cuda.device = lambda *a, **k: contextlib.nullcontext()
    # Memory statistics are logged by timers/reporters; report zero rather than crash.
    for name in ("memory_allocated", "max_memory_allocated", "memory_reserved", "max_memory_reserved"):
        setattr(cuda, name, lambda *a, **k: 0)
    cuda.reset_peak_memory_stats = lambda *a, **k: None
    cuda.empty_cache = lambda *a, **k: None
    # The RNG tracker (tensor_parallel.random) keeps per-parallel-group CUDA RNG states.
    cuda.get_rng_state = _fake_get_state
    cuda.set_rng_state = _fake_set_state
    cuda.manual_seed = _fake_seed
    cuda.manual_seed_all = _fake_seed
    cuda.get_rng_state_all = lambda: [_fake_get_state()]
    cuda.set_rng_state_all = lambda states: _fake_set_state(states[0])
    from megatron.core.tensor_parallel import random as mp_random

    mp_random._get_cuda_rng_state = _fake_get_state  # reads torch.cuda.default_generators
    mp_random._set_cuda_rng_state = _fake_set_state  # lazy-calls into the CUDA generator
    # Megatron's nvtx ranges (profiling markers) call into the CUDA runtime.
    cuda.nvtx = types.SimpleNamespace(range_push=lambda *a, **k: None, range_pop=lambda *a, **k: None,
                                      mark=lambda *a, **k: None,
                                      range=lambda *a, **k: contextlib.nullcontext())
    _MODE = _CudaAsCpu()
    _MODE.__enter__()
    _ENABLED = True
