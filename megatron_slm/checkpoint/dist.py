"""Megatron-layout checkpoints: save atomically, resume exactly, reshard across layouts.

    <save>/iter_0000100/                 a dist checkpoint (model, optimizer, RNG) + slm_state.json
    <save>/latest_checkpointed_iteration.txt

A checkpoint is written into `iter_XXXXXXX.tmp/` and renamed into place by rank 0 only after
every rank finished and `slm_state.json` (counters, scheduler, config) is on disk; the `latest`
pointer is replaced last (write + rename). A process killed at any point therefore leaves the
previous `latest` and its directory intact. Dist checkpoints store global tensors, so a
checkpoint loads into any TP/PP/DP layout; RNG states are restored only into the same layout.
"""
from __future__ import annotations

import json
import random
import shutil
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.distributed as dist

from megatron_slm.config import ConfigError
from megatron_slm.models.arch import ModelArch
from megatron_slm.checkpoint.layout import (LATEST, STATE, intact_checkpoints_hint, iter_dir, latest_iteration,
                                           read_state)
from megatron_slm.jsonio import atomic_write
from megatron_slm.models.record import write_model_record

# The distributed optimizer's state format that reshards across TP, PP and DP.
OPTIMIZER_METADATA = {"distrib_optim_sharding_type": "fully_reshardable"}


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def _model_sharded_state_dict(models: list) -> dict:
    if len(models) == 1:
        return {"model": models[0].sharded_state_dict()}
    return {f"model{i}": m.sharded_state_dict() for i, m in enumerate(models)}


def _layout() -> dict:
    from megatron.core import parallel_state as ps

    return {"tp": ps.get_tensor_model_parallel_world_size(), "pp": ps.get_pipeline_model_parallel_world_size(),
            "dp": ps.get_data_parallel_world_size()}


def _rng_sharded_object(is_loading: bool):
    """This rank's RNG states, one object per (pp, tp) position, DP replicas deduplicated."""
    from megatron.core import parallel_state as ps
    from megatron.core.dist_checkpointing.mapping import ShardedObject
    from megatron.core.tensor_parallel import get_cuda_rng_tracker

    state = None if is_loading else {
        "random": random.getstate(), "np": np.random.get_state(), "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
        "tracker": get_cuda_rng_tracker().get_states(),
    }
    return ShardedObject("rng_state", state,
                         (ps.get_pipeline_model_parallel_world_size(), ps.get_tensor_model_parallel_world_size()),
                         (ps.get_pipeline_model_parallel_rank(), ps.get_tensor_model_parallel_rank()),
                         replica_id=ps.get_data_parallel_rank())


def _restore_rng(state: dict) -> None:
    from megatron.core.tensor_parallel import get_cuda_rng_tracker

    random.setstate(state["random"])
    np.random.set_state(state["np"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    get_cuda_rng_tracker().set_states(state["tracker"])


def _prepare_tmp_dir(root: Path, iteration: int) -> Path:
    tmp = Path(str(iter_dir(root, iteration)) + ".tmp")
    if _rank() == 0:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():  # left over by a killed save
            shutil.rmtree(tmp)
        tmp.mkdir()
    _barrier()
    return tmp


def _finalize(root: Path, iteration: int, tmp: Path, state: dict, keep_last: Optional[int]) -> None:
    """Rank 0, after every rank wrote its shards: state file, rename into place, then `latest`."""
    atomic_write(tmp / STATE, json.dumps(state, indent=1, default=str))
    final = iter_dir(root, iteration)
    if final.exists():  # saving the same iteration again (e.g. after a resume)
        old = Path(str(final) + ".old")
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(final)
    atomic_write(root / LATEST, str(iteration))
    if keep_last is not None:  # the schema keeps it >= 1; the one just saved is never a candidate
        if keep_last < 1:
            raise ValueError(f"checkpoint.keep_last={keep_last} must be >= 1")
        done = sorted(p for p in root.glob("iter_???????") if p.is_dir() and p != final)
        for old in done[:max(0, len(done) - (keep_last - 1))]:
            shutil.rmtree(old, ignore_errors=True)


class MissingCheckpointFile(ConfigError):
    """A dist checkpoint lacks one of its files."""


def load_sharded(sharded: dict, path: str | Path, **kw) -> dict:
    """dist_checkpointing.load, with a missing shard file reported by name (MissingCheckpointFile)."""
    from megatron.core import dist_checkpointing
    from torch.distributed.checkpoint.api import CheckpointException  # a BaseException

    try:
        return dist_checkpointing.load(sharded, str(path), **kw)
    except (FileNotFoundError, CheckpointException) as e:
        missing = missing_file(e)
        if missing is None:
            raise
        raise MissingCheckpointFile(f"{path}: the checkpoint file {missing} is missing (an incomplete copy or "
                                    f"a damaged checkpoint)") from None


def missing_file(error: BaseException) -> Optional[str]:
    """The name of the checkpoint file whose absence caused `error` (torch's checkpoint reader
    wraps the FileNotFoundError of every rank in a CheckpointException), else None."""
    import re

    if isinstance(error, FileNotFoundError) and error.filename:
        return Path(error.filename).name
    m = re.search(r"No such file or directory: '([^']+)'", str(error))
    return Path(m.group(1)).name if m else None


class CheckpointSaveError(RuntimeError):
    """Writing a checkpoint failed; the previous one (and `latest`) is untouched."""


def _save_failed(root: Path, iteration: int, tmp: Path, error: Exception) -> CheckpointSaveError:
    if _rank() == 0:
        shutil.rmtree(tmp, ignore_errors=True)
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    previous = (root / LATEST).read_text().strip() if (root / LATEST).is_file() else None
    kept = f"the previous checkpoint (iteration {previous}) is intact" if previous else "no earlier checkpoint exists"
    return CheckpointSaveError(f"saving iteration {iteration} to {root} failed "
                               f"({lines[-1] if lines else type(error).__name__}); {kept}")


class Checkpointer:
    """Saves and loads the full training state; owns the async-save queue on GPU."""

    def __init__(self, async_save: bool = False):
        self.async_queue = None
        if async_save:
            from megatron.core.dist_checkpointing.strategies.async_utils import AsyncCallsQueue

            self.async_queue = AsyncCallsQueue()

    def save(self, root: str | Path, iteration: int, models: list, optimizer=None, scheduler=None,
             state: Optional[dict] = None, keep_last: Optional[int] = None, sharded_strategy=None) -> float:
        """Returns the seconds this call blocked training. `sharded_strategy`: a dist_checkpointing
        save strategy (the converter's streaming writer); None = Megatron's default."""
        from megatron.core import dist_checkpointing

        t0 = time.perf_counter()
        root = Path(root)
        self.wait()  # one save in flight at a time
        tmp = _prepare_tmp_dir(root, iteration)
        sharded = _model_sharded_state_dict(models)
        contents = ["model"]
        if optimizer is not None:
            sharded["optimizer"] = optimizer.sharded_state_dict(
                {k: v for k, v in sharded.items()}, is_loading=False, metadata=OPTIMIZER_METADATA)
            sharded["rng_state"] = _rng_sharded_object(is_loading=False)
            contents += ["optimizer", "rng"]
        full_state = dict(state or {}, iteration=iteration, contents=contents, layout=_layout(),
                          distributed_optimizer=_is_distributed(optimizer) if optimizer is not None else None,
                          scheduler=scheduler.state_dict() if scheduler is not None else None,
                          saved_at=time.strftime("%Y-%m-%dT%H:%M:%S"))

        def finalize():
            _barrier()
            if _rank() == 0:
                _finalize(root, iteration, tmp, full_state, keep_last)
            _barrier()

        if self.async_queue is not None:
            request = dist_checkpointing.save(sharded, str(tmp), async_sharded_save=True)
            request.add_finalize_fn(finalize)
            self.async_queue.schedule_async_request(request)
        else:
            from torch.distributed.checkpoint.api import CheckpointException  # a BaseException

            try:
                dist_checkpointing.save(sharded, str(tmp), sharded_strategy=sharded_strategy)
            except (Exception, CheckpointException) as e:  # e.g. disk full: drop the partial shards
                raise _save_failed(root, iteration, tmp, e) from e
            finalize()
        return time.perf_counter() - t0

    def poll(self) -> None:
        if self.async_queue is not None:
            self.async_queue.maybe_finalize_async_calls(blocking=False)

    def wait(self) -> None:
        if self.async_queue is not None:
            self.async_queue.maybe_finalize_async_calls(blocking=True)


def _is_distributed(optimizer) -> bool:
    from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer

    return any(isinstance(o, DistributedOptimizer) for o in getattr(optimizer, "chained_optimizers", [optimizer]))


def _materialize_distributed_optimizer_state(optimizer) -> None:
    """Without Apex/TE, the distributed optimizer's state_dict() needs torch Adam states to
    exist; before the first step they do not. Take one step with zero gradients at lr 0 (no
    weight-decay effect); the loaded checkpoint then overwrites those states in place."""
    from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer

    for opt in getattr(optimizer, "chained_optimizers", [optimizer]):
        if isinstance(opt, DistributedOptimizer) and len(opt.optimizer.state) == 0:
            lrs = [group["lr"] for group in opt.optimizer.param_groups]
            for group in opt.optimizer.param_groups:
                group["lr"] = 0.0
            opt._init_optimizer_states_with_dummy_values()
            for group, lr in zip(opt.optimizer.param_groups, lrs):
                group["lr"] = lr


# Parameters whose rows are token ids: padded to a multiple of (divisible_by x TP).
VOCAB_KEYS = ("embedding.word_embeddings.weight", "output_layer.weight")


def stored_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Global shape of every tensor a dist checkpoint holds, by sharded key (metadata only)."""
    from torch.distributed.checkpoint import FileSystemReader

    meta = FileSystemReader(str(path)).read_metadata().state_dict_metadata
    return {k: tuple(v.size) for k, v in meta.items() if hasattr(v, "size")}


def stored_vocab_rows(path: str | Path) -> Optional[int]:
    """The padded vocabulary a dist checkpoint was saved with (its embedding's rows)."""
    shapes = stored_shapes(path)
    for key in VOCAB_KEYS:
        if key in shapes:
            return shapes[key][0]
    return None


def load_checkpoint(root: str | Path, models: list, optimizer=None, scheduler=None,
                    iteration: Optional[int] = None) -> dict:
    """Load weights (and, when the checkpoint has them and an optimizer is given, optimizer,
    scheduler and -- in the same layout -- RNG states). Returns the saved state dict."""
    iteration = latest_iteration(root) if iteration is None else iteration
    state = read_state(root, iteration)
    path = iter_dir(root, iteration)
    sharded = _model_sharded_state_dict(models)
    with_optimizer = optimizer is not None and "optimizer" in state.get("contents", [])
    if with_optimizer:
        saved_kind, kind = state.get("distributed_optimizer"), _is_distributed(optimizer)
        if saved_kind is not None and saved_kind != kind:
            raise ConfigError(f"{path} holds a {'distributed' if saved_kind else 'regular'} optimizer state; "
                              f"set parallel.distributed_optimizer={str(saved_kind).lower()} to resume it, or "
                              f"checkpoint.load_optimizer=false to load the weights only")
        _materialize_distributed_optimizer_state(optimizer)
        sharded["optimizer"] = optimizer.sharded_state_dict(
            {k: v for k, v in sharded.items()}, is_loading=True, metadata=OPTIMIZER_METADATA)
        if state.get("layout") == _layout():
            sharded["rng_state"] = _rng_sharded_object(is_loading=True)
    # A model padded for another TP loads as is: Megatron marks the vocabulary tensors (and the
    # optimizer state made from them) allow_shape_mismatch, so the saved rows are read and rows
    # beyond them start at zero. Padding rows are masked out of every softmax (training loss,
    # scoring, sampling): they are never trained or scored, and their number changes nothing.
    try:
        loaded = load_sharded(sharded, path)
    except MissingCheckpointFile as e:
        raise ConfigError(f"{e}; {intact_checkpoints_hint(root, exclude=iteration)}") from None
    for i, model in enumerate(models):
        model.load_state_dict(loaded["model" if len(models) == 1 else f"model{i}"])
    if with_optimizer:
        optimizer.load_state_dict(loaded["optimizer"])
        if scheduler is not None and state.get("scheduler"):
            scheduler.load_state_dict(state["scheduler"])
        if "rng_state" in loaded:
            _restore_rng(loaded["rng_state"])
    elif optimizer is not None:
        optimizer.reload_model_params()  # fp32 master copies from the freshly loaded weights
    state["loaded_optimizer"] = with_optimizer
    return state


# ----------------------------------------------------------------- model-only (converter API)


def save_model_checkpoint(models: list, save_dir: str | Path, arch: ModelArch, padded_vocab_size: int,
                          iteration: int = 0, extra_state: Optional[dict] = None, sharded_strategy=None,
                          identity: Optional[dict] = None) -> None:
    """Weights only, as a run directory the trainer loads (`model.from` / `checkpoint.load`)."""
    if _rank() == 0:
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        write_model_record(save_dir, arch, padded_vocab_size, identity)
    Checkpointer().save(save_dir, iteration, models, state=dict(extra_state or {}, consumed_samples=0,
                                                                consumed_tokens=0),
                        sharded_strategy=sharded_strategy)


def load_model_checkpoint(models: list, load_dir: str | Path, iteration: Optional[int] = None) -> int:
    state = load_checkpoint(load_dir, models, iteration=iteration)
    return int(state["iteration"])
