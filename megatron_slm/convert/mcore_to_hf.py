"""Megatron checkpoint (any TP/PP, with or without optimizer) -> HF safetensors model.

    convert_mcore_to_hf("runs/sims-1b", "hf/sims-1b", dtype="bf16")

Parameters are read one layer at a time from the dist checkpoint (it reshards to the TP=1
layout on read), mapped back to HF names, padding rows trimmed, and written into shards;
the config comes from the run's `slm_model.json`, the tokenizer from `<run>/tokenizer`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from tqdm import tqdm

from megatron_slm.convert import mapping
from megatron_slm.convert.families import ConversionError, family_of, hf_config_from_arch
from megatron_slm.convert.hf_io import ShardWriter, check_output, staged_output_dir
from megatron_slm.convert.streaming import (
    SliceRegistry, load_params, megatron_process, meta_models, stored_dtype)
from megatron_slm.convert.vocab_extension import trim_rows
from megatron_slm.config import ConfigError
from megatron_slm.models.arch import ModelArch
from megatron_slm.models.provider import TORCH_DTYPES

@dataclass
class ExportSummary:
    out: Path
    iteration: int
    arch: ModelArch
    dtype: str
    tensors: int
    shards: int
    bytes_written: int
    seconds: float

    def lines(self) -> list[str]:
        return [f"wrote {self.out} from iteration {self.iteration} ({self.arch.family}, vocab {self.arch.vocab_size}, "
                f"dtype {self.dtype})",
                f"  tensors: {self.tensors} in {self.shards} shard(s), {self.bytes_written / 2**20:.1f} MiB, "
                f"{self.seconds:.1f}s"]


def parse_size(text: str) -> int:
    units = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "B": 1}
    t = text.strip().upper()
    for unit, mult in units.items():
        if t.endswith(unit) and t[: -len(unit)].strip().replace(".", "", 1).isdigit():
            return int(float(t[: -len(unit)]) * mult)
    if t.isdigit():
        return int(t)
    raise ConversionError(f"--max-shard-size {text!r}: expected a size such as 5GB or 500MB")


def resolve_checkpoint(mcore_dir: Path, iteration: Optional[int]) -> tuple[ModelArch, int, int, Path]:
    from megatron_slm.checkpoint.layout import iter_dir, latest_iteration
    from megatron_slm.models.record import read_model_record

    try:
        record = read_model_record(mcore_dir)
        arch, padded = record.arch, record.padded_vocab_size
        iteration = latest_iteration(mcore_dir) if iteration is None else iteration
    except ConfigError as e:
        raise ConversionError(str(e)) from None
    path = iter_dir(mcore_dir, iteration)
    if not (path / "metadata.json").is_file():
        raise ConversionError(f"{path}: not a complete dist checkpoint (no metadata.json)")
    from megatron_slm.checkpoint.dist import stored_vocab_rows

    padded = stored_vocab_rows(path) or padded  # the rows saved (the record may be a later layout's)
    if padded is None:
        raise ConversionError(f"{mcore_dir}/slm_model.json has no padded_vocab_size")
    return arch, padded, iteration, path


def convert_mcore_to_hf(mcore_dir: str | Path, out: str | Path, iteration: Optional[int] = None,
                        dtype: Optional[str] = None, tokenizer_dir: Optional[str | Path] = None,
                        max_shard_size: str = "2GB", force: bool = False, progress: bool = True) -> ExportSummary:
    from transformers import AutoTokenizer

    from megatron_slm.vocab import UnitInventory
    from megatron_slm.models.record import read_identity, write_identity

    t0 = time.perf_counter()
    mcore_dir = Path(mcore_dir)
    check_output(out, force, (mcore_dir, tokenizer_dir))  # before any work
    arch, padded, iteration, path = resolve_checkpoint(mcore_dir, iteration)
    family = family_of(arch.family)
    tok_dir = Path(tokenizer_dir) if tokenizer_dir else mcore_dir / "tokenizer"
    if not tok_dir.is_dir():
        raise ConversionError(f"{tok_dir}: no tokenizer (pass --tokenizer DIR)")
    tokenizer = AutoTokenizer.from_pretrained(str(tok_dir), local_files_only=True)
    if len(tokenizer) != arch.vocab_size:
        raise ConversionError(f"{tok_dir} has {len(tokenizer)} tokens but the model's vocabulary is "
                              f"{arch.vocab_size} ({mcore_dir}/slm_model.json)")
    max_bytes = parse_size(max_shard_size)
    groups = [family.model_level_tensors(arch)] + [family.tensors_for_layer(arch, i) for i in range(arch.num_layers)]
    n_tensors = sum(len(tm.hf) for g in groups for tm in g)
    with megatron_process():
        stored = stored_dtype(path)
        out_dtype = TORCH_DTYPES[dtype] if dtype else stored
        dtype_name = str(out_dtype).replace("torch.", "")
        registry = SliceRegistry(meta_models(arch, padded))
        bar = tqdm(total=n_tensors, unit="tensor", desc="mcore-to-hf", disable=not progress)
        with staged_output_dir(out, force, inputs=(mcore_dir, tokenizer_dir), tool="mcore-to-hf") as tmp:
            writer = ShardWriter(tmp, max_bytes)
            for group in groups:
                params = load_params(path, registry, [tm.mcore for tm in group], stored)
                for tm in group:
                    t = params.pop(tm.mcore)
                    if tm.how == "vocab":
                        t = trim_rows(t, arch.vocab_size)
                    for name, hf in zip(tm.hf, mapping.to_hf(tm, t, arch)):
                        writer.add(name, hf.to(out_dtype))
                        bar.update(1)
                bar.set_postfix_str(f"{writer.total_bytes / 2**20:.0f} MiB")
            shards = writer.close()
            hf_config_from_arch(arch, dtype_name, tokenizer.bos_token_id, tokenizer.eos_token_id).save_pretrained(tmp)
            tokenizer.save_pretrained(str(tmp))
            inventory = UnitInventory.load(tok_dir)
            if inventory is not None:  # several codebooks: how the units split travels with the tokenizer
                inventory.save(tmp)
            identity = read_identity(mcore_dir)
            if identity:  # the export keeps what its ids mean (eval and generation check it)
                write_identity(tmp, identity)
        bar.close()
    return ExportSummary(Path(out), iteration, arch, dtype_name, n_tensors, shards, writer.total_bytes,
                         time.perf_counter() - t0)
