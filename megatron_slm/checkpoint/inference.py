"""Load a run or converted checkpoint directory for inference, in any TP/PP layout.

    loaded = load_for_inference("runs/sims-1b", tp=2, pp=1)
    loaded.models, loaded.arch, loaded.padded_vocab_size

The one loader behind evaluation, generation and conversion verify: the architecture comes from
`slm_model.json`, the weights from the dist checkpoint, re-padded to this TP when the saved
padding does not divide by it (`checkpoint/dist.py`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from megatron_slm.config import ConfigError, RuntimeConfig
from megatron_slm.models.arch import ModelArch, padded_vocab_for_layout
from megatron_slm.models.record import ModelRecord, read_model_record
from megatron_slm.models.spec import ModelSpec, layout_problem


@dataclass
class LoadedModel:
    models: list  # this rank's GPTModel chunk(s), in eval mode
    arch: ModelArch
    padded_vocab_size: int  # the rows this layout built (may differ from the saved padding)
    iteration: int
    record: ModelRecord
    on_cuda: bool


def load_for_inference(directory: str | Path, tp: int = 1, pp: int = 1, iteration: Optional[int] = None,
                       dtype: Optional[str] = None, seed: int = 1234, divisible_by: int = 128,
                       runtime: Optional[RuntimeConfig] = None) -> LoadedModel:
    """Initialise the process groups (unless already up) and load `directory` at `iteration`
    (default: the latest). `dtype` default: bf16 on CUDA, fp32 on the CPU. Raises ConfigError
    (one line) for a directory that is not a checkpoint or a layout the model cannot take."""
    from megatron_slm.checkpoint.dist import load_model_checkpoint
    from megatron_slm.models.provider import build_gpt_models
    from megatron_slm.runtime.distributed import init_distributed

    record = read_model_record(directory)
    problem = layout_problem(record.arch, tp, pp)
    if problem:
        raise ConfigError(f"{directory}: {problem}")
    info = init_distributed(runtime, tp=tp, pp=pp, seed=seed)
    padded = padded_vocab_for_layout(record.arch.vocab_size, divisible_by, tp, record.padded_vocab_size)
    spec = ModelSpec.for_inference(record.arch, padded, tp, pp, dtype or ("bf16" if info.is_cuda else "fp32"))
    models = build_gpt_models(spec, on_cuda=info.is_cuda)
    loaded_iteration = load_model_checkpoint(models, directory, iteration=iteration)
    for m in models:
        m.eval()
    return LoadedModel(models, record.arch, padded, loaded_iteration, record, info.is_cuda)
