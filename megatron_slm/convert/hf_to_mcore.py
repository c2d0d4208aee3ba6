"""HF text LM -> Megatron run directory at iteration 0, with the speech vocabulary added.

    convert_hf_to_mcore("/models/Llama-3.2-1B", "ckpt/llama1b-slm", tp=2, pp=2, num_units=500)  # K: default the tokenizer's, else 500

The checkpoint is written once, in the TP=1/PP=1 layout (dist checkpoints reshard on load);
`tp`/`pp` only validate that the model splits that way and choose the vocabulary padding
(a multiple of make_vocab_size_divisible_by x tp, which the trainer keeps when it loads).
Tensors stream from the safetensors files straight into the checkpoint writer.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from tqdm import tqdm

from megatron_slm.convert import mapping
from megatron_slm.convert.families import ConversionError, arch_from_hf_config, read_hf_config
from megatron_slm.convert.hf_io import HFReader, check_output, staged_output_dir
from megatron_slm.convert.streaming import (
    DTYPE_NAMES, SliceRegistry, StreamingSaveStrategy, megatron_process, meta_models)
from megatron_slm.convert.vocab_extension import VocabPlan, empty_matrix, init_new_rows
from megatron_slm.models.arch import ModelArch, padded_vocab_size
from megatron_slm.models.provider import TORCH_DTYPES
from megatron_slm.models.spec import layout_problem

@dataclass
class ConversionSummary:
    out: Path
    arch: ModelArch
    padded_vocab_size: int
    plan: VocabPlan
    already_extended: bool
    dtype: str
    tensors: int
    bytes_read: int
    seconds: float

    def lines(self) -> list[str]:
        p = self.plan
        new = "none (tokenizer already has the units)" if self.already_extended else \
            f"{p.new_rows} rows at ids {p.copy_rows}..{p.vocab_size - 1}, init={p.init}"
        return [f"wrote {self.out} ({self.arch.family}, {self.arch.num_layers} layers, dtype {self.dtype})",
                f"  tensors: {self.tensors}, read {self.bytes_read / 2**20:.1f} MiB in {self.seconds:.1f}s",
                f"  vocabulary: text {p.text_vocab_size} + units/markers -> {p.vocab_size}, "
                f"padded to {self.padded_vocab_size}; new rows: {new}"]


def check_layout(arch: ModelArch, tp: int, pp: int, where: str) -> None:
    """The model must split evenly over TP and PP (one clear line naming the setting otherwise)."""
    problem = layout_problem(arch, tp, pp)
    if problem:
        raise ConversionError(f"{where}: {problem}")


def _dtype_from_config(config: dict, reader: HFReader) -> str:
    name = config.get("torch_dtype") or config.get("dtype") or reader.dtype_name() or "float32"
    for short, long in DTYPE_NAMES.items():
        if name == long:
            return short
    return "fp32"


def _vocab_plan(hf_dir: Path, tokenizer_dir: Path, rows: int, num_units: Optional[int], init: str, seed: int,
                divisible_by: int, tp: int, inventory=None) -> tuple[VocabPlan, bool, object]:
    from transformers import AutoTokenizer

    from megatron_slm.vocab import SpeechVocab, VocabError, unit_token

    try:
        vocab = SpeechVocab.from_pretrained(tokenizer_dir, num_units=num_units, inventory=inventory)
        base = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
    except VocabError as e:
        raise ConversionError(str(e)) from None
    already = unit_token(0) in base.get_vocab()
    copy_rows = vocab.vocab_size if already else vocab.text_vocab_size
    if rows < copy_rows:
        raise ConversionError(f"{hf_dir}: the embedding has {rows} rows but the tokenizer in {tokenizer_dir} "
                              f"needs {copy_rows} ({'extended' if already else 'base'} vocabulary)")
    plan = VocabPlan(text_vocab_size=vocab.text_vocab_size, copy_rows=copy_rows, vocab_size=vocab.vocab_size,
                     padded_vocab_size=padded_vocab_size(vocab.vocab_size, divisible_by, tp), init=init, seed=seed)
    return plan, already, vocab


def _vocab_matrix(reader: HFReader, name: str, plan: VocabPlan, dtype: torch.dtype) -> torch.Tensor:
    """Embedding/lm_head with the new rows, read straight into the padded matrix when possible."""
    rows, hidden = reader.shapes[name]
    out = empty_matrix(plan, hidden, dtype)
    if not reader.read_rows_into(name, out[: plan.copy_rows]):
        out[: plan.copy_rows] = reader.get(name)[: plan.copy_rows]
    init_new_rows(out, plan)
    return out


def check_layer_count(reader: HFReader, num_layers: int, where: str) -> None:
    """config.json's layer count must be the one the weights have (found by their names)."""
    import re

    found = {int(m.group(1)) for name in reader.shapes if (m := re.search(r"\.layers\.(\d+)\.", name))}
    if found != set(range(num_layers)):
        raise ConversionError(f"{where}: num_hidden_layers={num_layers} but the weights in {reader.dir} have "
                              f"{len(found)} layers (indices {min(found, default=None)}..{max(found, default=None)})")


def _identity(hf_dir: Path, vocab) -> dict:
    """What the converted ids mean: this vocabulary, and the units an exported SLM recorded (a
    text LM has seen none yet). An export of another vocabulary is refused."""
    from megatron_slm.models.record import read_identity
    from megatron_slm.unit_identity import IdentityError, check_ids

    recorded = read_identity(hf_dir) or {}
    mine = {"vocab": vocab.identity(), "units": recorded.get("units")}
    if recorded.get("vocab"):
        try:
            check_ids(recorded, mine, str(hf_dir / "slm_identity.json"), "the tokenizer given")
        except IdentityError as e:
            raise ConversionError(f"{e}: the tokenizer given is not the one this model was trained with") from None
    return mine


def convert_hf_to_mcore(hf_dir: str | Path, out: str | Path, tp: int = 1, pp: int = 1, num_units: Optional[int] = None,
                        init: str = "mean", dtype: Optional[str] = None, tokenizer_dir: Optional[str | Path] = None,
                        make_vocab_size_divisible_by: int = 128, seed: int = 1234, force: bool = False,
                        progress: bool = True, inventory=None) -> ConversionSummary:
    """`inventory`: the units' `vocab.UnitInventory` (from a units sidecar: K x n_q units, each
    codebook its own id range); None: `num_units` units in one codebook."""
    from megatron_slm.checkpoint.dist import save_model_checkpoint

    t0 = time.perf_counter()
    hf_dir = Path(hf_dir)
    check_output(out, force, (hf_dir, tokenizer_dir))  # before any work
    from megatron_slm.convert.gguf import gguf_to_hf, is_gguf

    if is_gguf(hf_dir):  # dequantised into a plain HF dir beside the output, removed afterwards
        import tempfile

        Path(out).parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=Path(out).parent, prefix=".gguf-") as tmp:
            plain = gguf_to_hf(hf_dir, Path(tmp) / "hf")
            return convert_hf_to_mcore(plain, out, tp, pp, num_units, init, dtype, tokenizer_dir or plain,
                                       make_vocab_size_divisible_by, seed, force, progress, inventory)
    config = read_hf_config(hf_dir)
    family, hf_arch = arch_from_hf_config(config, where=str(hf_dir / "config.json"))
    check_layout(hf_arch, tp, pp, str(hf_dir / "config.json"))
    reader = HFReader(hf_dir)
    embed_name = family.model_tensors[0].hf[0]
    if embed_name not in reader:
        raise ConversionError(f"{hf_dir}: the checkpoint has no tensor {embed_name!r}")
    rows = reader.shapes[embed_name][0]
    check_layer_count(reader, hf_arch.num_layers, str(hf_dir / "config.json"))
    plan, already, vocab = _vocab_plan(hf_dir, Path(tokenizer_dir or hf_dir), rows, num_units, init, seed,
                                       make_vocab_size_divisible_by, tp, inventory)
    arch = hf_arch.replace(vocab_size=plan.vocab_size)
    dtype = dtype or _dtype_from_config(config, reader)
    torch_dtype = TORCH_DTYPES[dtype]
    tmaps = {tm.mcore: tm for tm in family.all_tensors(arch)}

    bar = tqdm(total=len(tmaps), unit="tensor", desc="hf-to-mcore", disable=not progress)
    done: set[str] = set()
    read_bytes = 0
    last: tuple[Optional[str], Optional[torch.Tensor]] = (None, None)
    shapes: dict[str, tuple] = {}

    def materialize(name: str) -> torch.Tensor:
        """Megatron parameter `name` (TP=1), built from its HF tensors; the last one is kept
        because SwiGLU's linear_fc1 is written as two pieces."""
        nonlocal last, read_bytes
        if last[0] == name:
            return last[1]
        tm = tmaps[name]
        last = (None, None)  # drop the previous tensor before reading the next
        if tm.how == "vocab":
            t = _vocab_matrix(reader, tm.hf[0], plan, torch_dtype)
        else:
            hf = [reader.get(h) for h in tm.hf]
            mapping.check_shapes(tm, hf, arch, str(hf_dir))
            t = mapping.to_mcore(tm, hf, arch).to(torch_dtype)
            del hf
        if tuple(t.shape) != shapes[name]:
            raise ConversionError(f"{hf_dir}: {', '.join(tm.hf)} give shape {tuple(t.shape)} for {name}, "
                                  f"config.json implies {shapes[name]}")
        if name not in done:
            done.add(name)
            read_bytes += sum(reader.nbytes[h] for h in tm.hf)
            bar.update(1)
            bar.set_postfix_str(f"{read_bytes / 2**20:.0f} MiB read")
        last = (name, t)
        return t

    with megatron_process():
        models = meta_models(arch, plan.padded_vocab_size, dtype)
        shapes.update({n: tuple(p.shape) for n, p in models[0].named_parameters()})
        registry = SliceRegistry(models)
        if registry.param_names() != set(tmaps):
            raise RuntimeError(f"family table and Megatron model disagree: "
                               f"{sorted(registry.param_names() ^ set(tmaps))}")
        with staged_output_dir(out, force, inputs=(hf_dir, tokenizer_dir), tool="hf-to-mcore") as tmp:
            save_model_checkpoint(models, tmp, arch, plan.padded_vocab_size, iteration=0,
                                  extra_state={"converted_from": str(hf_dir)},
                                  sharded_strategy=StreamingSaveStrategy(registry, materialize),
                                  identity=_identity(hf_dir, vocab))
            vocab.save(tmp / "tokenizer")
            (tmp / "conversion.json").write_text(json.dumps({
                "source": str(hf_dir.resolve()), "family": family.name, "dtype": dtype, "tp": tp, "pp": pp,
                "num_units": vocab.num_units, "init": None if already else init, "already_extended": already,
                "text_vocab_size": plan.text_vocab_size, "vocab_size": plan.vocab_size,
                "padded_vocab_size": plan.padded_vocab_size}, indent=2))
    bar.close()
    return ConversionSummary(Path(out), arch, plan.padded_vocab_size, plan, already, dtype, len(done),
                             read_bytes, time.perf_counter() - t0)
