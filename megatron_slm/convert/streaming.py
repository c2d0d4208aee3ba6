"""Write and read Megatron dist checkpoints one tensor at a time.

The converter never builds the model's weights. It builds the TP=1/PP=1 `GPTModel` on the
`meta` device (shapes only) through the same provider the trainer uses, so the sharded keys,
global shapes and offsets are exactly what `pretrain_slm.py` expects, and then:

* saving: `StreamingSaveStrategy` writes the standard torch_dist format with
  torch.distributed.checkpoint, but its planner materialises each tensor only when the
  writer asks for it (from a callback: Megatron parameter name -> full TP=1 tensor) and
  drops it after writing. Peak memory ~ the largest parameter, not the model.
* loading: `load_params` asks dist_checkpointing for a subset of the parameters (one layer
  at a time); the checkpoint may have been written with any TP/PP and hold an optimizer.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, Iterator

import torch

from megatron_slm.config import RuntimeConfig
from megatron_slm.models.arch import ModelArch
from megatron_slm.models.spec import ModelSpec

DTYPE_NAMES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
# Conversion and verification run on the CPU over gloo, whatever accelerator the machine has.
CPU_RUNTIME = RuntimeConfig(device="cpu", backend="gloo")


@contextlib.contextmanager
def megatron_process(tp: int = 1, pp: int = 1) -> Iterator[None]:
    """Process groups for Megatron (a group of one unless launched by torchrun)."""
    from megatron_slm.runtime.distributed import destroy_distributed, init_distributed

    init_distributed(CPU_RUNTIME, tp=tp, pp=pp)
    try:
        yield
    finally:
        destroy_distributed()


def meta_models(arch: ModelArch, padded_vocab: int, dtype: str = "fp32") -> list:
    """The TP=1/PP=1 model with shapes only (no memory for weights)."""
    from megatron_slm.models.provider import build_gpt_models

    with torch.device("meta"):
        models = build_gpt_models(ModelSpec.for_inference(arch, padded_vocab, dtype=dtype, layer_spec="local"))
    return models


def sharded_state_dict(models: list) -> dict:
    # Same nesting as the trainer's checkpoints (checkpoint/dist.py).
    if len(models) == 1:
        return {"model": models[0].sharded_state_dict()}
    return {f"model{i}": m.sharded_state_dict() for i, m in enumerate(models)}


class SliceRegistry:
    """(sharded key, global offset) -> (parameter name, first row, rows) for a meta model.

    After factories are applied (SwiGLU splits linear_fc1 into gate/up pieces) every shard of
    the TP=1 model is its parameter or a block of its rows; the writer identifies a shard by
    key + offset, and this tells which rows of which parameter to produce (and, for reading,
    which shards make up a parameter)."""

    def __init__(self, models: list) -> None:
        from megatron.core.dist_checkpointing.dict_utils import nested_values
        from megatron.core.dist_checkpointing.mapping import ShardedTensor, apply_factories

        owner = {id(p): name for name, p in models[0].named_parameters()}
        self.shapes = {name: tuple(p.shape) for name, p in models[0].named_parameters()}
        sd = sharded_state_dict(models)
        apply_factories(sd)
        self.entries: dict[tuple[str, tuple[int, ...]], tuple[str, int, int]] = {}
        self.shards: dict[str, list[tuple[int, int, "ShardedTensor"]]] = {}
        for sh in nested_values(sd):
            if not isinstance(sh, ShardedTensor):
                continue
            data = sh.data
            base = data if id(data) in owner else data._base
            if base is None or id(base) not in owner:
                raise RuntimeError(f"sharded tensor {sh.key} is not a parameter or a view of one")
            row = base.stride(0) if base.dim() else 1
            rows = data.shape[0] if data.dim() else 1
            name, start = owner[id(base)], data.storage_offset() // row
            self.entries[(sh.key, tuple(sh.global_offset))] = (name, start, rows)
            self.shards.setdefault(name, []).append((start, rows, sh))

    def param_names(self) -> set[str]:
        return set(self.shards)


class StreamingSaveStrategy:
    """A torch_dist save strategy whose tensors are produced on demand (see module doc)."""

    def __new__(cls, registry: SliceRegistry, materialize: Callable[[str], torch.Tensor]):
        from megatron.core.dist_checkpointing.strategies.base import SaveShardedStrategy
        from megatron.core.dist_checkpointing.strategies.torch import (
            MCoreSavePlanner, _replace_state_dict_keys_with_sharded_keys, mcore_to_pyt_state_dict)
        import torch.distributed.checkpoint as dcp

        class _Planner(MCoreSavePlanner):
            def transform_object(self, write_item, obj):
                if isinstance(obj, torch.Tensor) and obj.is_meta:
                    name, start, rows = registry.entries[(write_item.index.fqn, tuple(write_item.index.offset))]
                    full = materialize(name)
                    part = full[start:start + rows] if full.dim() else full
                    return part.reshape(obj.shape).to(obj.dtype)
                return super().transform_object(write_item, obj)

        class _Strategy(SaveShardedStrategy):
            @property
            def can_handle_sharded_objects(self) -> bool:
                return True

            def save(self, sharded_state_dict, checkpoint_dir) -> None:
                sd, _, _ = _replace_state_dict_keys_with_sharded_keys(sharded_state_dict, True)
                # One writer thread, one file: tensors are resolved (read, transformed) one by one.
                writer = dcp.FileSystemWriter(str(checkpoint_dir), thread_count=1, single_file_per_rank=True)
                dcp.save(mcore_to_pyt_state_dict(sd, False), storage_writer=writer,
                         planner=_Planner(flatten_state_dict=False, dedup_replicated_tensors=False))

        return _Strategy("torch_dist", 1)


def stored_dtype(iter_path: Path, probe_key: str = "decoder.final_layernorm.weight") -> torch.dtype:
    """The dtype a dist checkpoint stores its model weights in."""
    from torch.distributed.checkpoint import FileSystemReader

    meta = FileSystemReader(str(iter_path)).read_metadata().state_dict_metadata
    if probe_key not in meta:
        raise ValueError(f"{iter_path}: no {probe_key} in the checkpoint (not a GPT model checkpoint?)")
    return meta[probe_key].properties.dtype


def load_params(iter_path: Path, registry: SliceRegistry, names: list[str],
                dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Load the TP=1 parameters `names` (e.g. one layer) from a dist checkpoint of any layout.

    Layer-stacked keys are requested as plain (non-prepended) shards of the stacked global
    tensor, which torch DCP reads chunk-wise; a prepended-axis request for one layer would
    need all layers (torch's ShardedTensor wants the full grid)."""
    from megatron.core.dist_checkpointing.mapping import ShardedTensor

    request: dict[str, ShardedTensor] = {}
    for name in names:
        for start, rows, sh in registry.shards[name]:
            local = (1,) * sh.prepend_axis_num + tuple(sh.local_shape)
            request[f"{name}@{start}"] = ShardedTensor(
                key=sh.key, data=torch.empty(local, dtype=dtype), dtype=dtype, local_shape=local,
                global_shape=tuple(sh.global_shape), global_offset=tuple(sh.global_offset),
                axis_fragmentations=None, replica_id=0, prepend_axis_num=0,
                allow_shape_mismatch=sh.allow_shape_mismatch)
    from megatron_slm.checkpoint.dist import MissingCheckpointFile, load_sharded
    from megatron_slm.convert.families import ConversionError

    try:
        loaded = load_sharded(request, iter_path, validate_access_integrity=False)
    except MissingCheckpointFile as e:
        raise ConversionError(str(e)) from None
    out = {}
    for name in names:
        full = torch.empty(registry.shapes[name], dtype=dtype)
        for start, rows, _ in registry.shards[name]:
            piece = loaded[f"{name}@{start}"]
            if full.dim():
                full[start:start + rows] = piece.reshape(rows, *full.shape[1:])
            else:
                full.copy_(piece.reshape(()))
        out[name] = full
    return out
