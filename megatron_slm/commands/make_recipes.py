"""Generate the SIMS recipes (examples/configs/sims_<model>_<gpu>.yaml) and docs/recipes.md.

  python tools/make_recipes.py            # write them
  python tools/make_recipes.py --check    # exit 1 when the committed files differ (CI)

One table below holds what differs between recipes (the parallel layout per model and GPU);
everything else is the SIMS recipe: blend text-only / interleaved /
speech-only = 0.2024 / 0.5433 / 0.2543, context 2048, AdamW lr 5e-4 cosine to 5e-5, 1% warmup,
clip 0.5, a token budget, and SlamKit's conventions (`compat: slamkit`: padded HuBERT input,
the bisect unit-span rule, SlamKit's poisson sampler lambda=10 / eta=0.3 and document layout), so
the data reproduce what the released SIMS models were trained on. Every layout is checked against the memory estimator
(megatron_slm/models/memory.py) and must fit in 85% of an 80 GB GPU; docs/recipes.md lists
the estimates.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]  # a dev tool: writes into the checkout

from megatron_slm.config import from_dict
from megatron_slm.models.flops import param_counts
from megatron_slm.models.memory import GPU_MEMORY_GIB, config_arch, estimate_for_config
from megatron_slm.vocab import DEFAULT_NUM_UNITS

CONFIG_DIR = REPO / "examples" / "configs"
DOC = REPO / "docs" / "recipes.md"
WORLD_SIZE = 8
GLOBAL_BATCH = 256  # sequences of 2048 tokens: 0.5M tokens per step
TOKEN_BUDGET = 20e9
BLEND = (("text", 0.2024), ("interleaved", 0.5433), ("speech", 0.2543))
HF_NAMES = {"llama3.2-1b": "Llama-3.2-1B", "llama3.2-3b": "Llama-3.2-3B", "qwen2.5-0.5b": "Qwen2.5-0.5B",
            "qwen2.5-1.5b": "Qwen2.5-1.5B", "qwen2.5-3b": "Qwen2.5-3B", "qwen2.5-7b": "Qwen2.5-7B",
            "qwen3-0.6b": "Qwen3-0.6B-Base", "qwen3-1.7b": "Qwen3-1.7B-Base", "qwen3-4b": "Qwen3-4B-Base",
            "qwen3-8b": "Qwen3-8B-Base"}
GPUS = {"a100": ("A100-80GB", "bf16"), "h100": ("H100-80GB", "fp8")}


@dataclass(frozen=True)
class Layout:
    tp: int = 1
    pp: int = 1
    mbs: int = 1
    recompute: str = "none"

    @property
    def sequence_parallel(self) -> bool:
        return self.tp > 1


# Data parallelism (with the distributed optimizer) is the fastest way to use 8 GPUs of one node
# as long as a model fits: TP only for 7B. Micro-batches fill memory without recomputation.
LAYOUTS: dict[tuple[str, str], Layout] = {
    ("qwen2.5-0.5b", "a100"): Layout(mbs=8), ("qwen2.5-0.5b", "h100"): Layout(mbs=8),
    ("llama3.2-1b", "a100"): Layout(mbs=8), ("llama3.2-1b", "h100"): Layout(mbs=8),
    ("qwen2.5-1.5b", "a100"): Layout(mbs=4), ("qwen2.5-1.5b", "h100"): Layout(mbs=4),
    ("llama3.2-3b", "a100"): Layout(mbs=4), ("llama3.2-3b", "h100"): Layout(mbs=4),
    ("qwen2.5-3b", "a100"): Layout(mbs=2), ("qwen2.5-3b", "h100"): Layout(mbs=4),
    ("qwen2.5-7b", "a100"): Layout(tp=2, mbs=2), ("qwen2.5-7b", "h100"): Layout(tp=2, mbs=2),
    ("qwen3-0.6b", "a100"): Layout(mbs=8), ("qwen3-0.6b", "h100"): Layout(mbs=8),
    ("qwen3-1.7b", "a100"): Layout(mbs=4), ("qwen3-1.7b", "h100"): Layout(mbs=4),
    ("qwen3-4b", "a100"): Layout(mbs=2), ("qwen3-4b", "h100"): Layout(mbs=2),
    ("qwen3-8b", "a100"): Layout(tp=2, mbs=2), ("qwen3-8b", "h100"): Layout(tp=2, mbs=2),
}


def recipe_name(model: str, gpu: str) -> str:
    return f"sims_{model}_{gpu}"


def data_dir(model: str) -> str:
    """Tokenized data depends on the base tokenizer only: all Llama-3.2 sizes share one set."""
    return f"data/{model.split('-')[0]}"


def recipe(model: str, gpu: str, layout: Layout) -> dict:
    """The config tree of one recipe (YAML keys as the schema spells them)."""
    ckpt = f"ckpt/{model}-slm"
    fp8 = GPUS[gpu][1] == "fp8"
    precision = {"dtype": "bf16"}
    if fp8:
        precision.update(fp8="hybrid", fp8_recipe="delayed", fp8_amax_history_len=1024, fp8_amax_compute_algo="max")
    return {
        "model": {"from": ckpt, "spec": "te", "recompute": layout.recompute},
        "parallel": {"tp": layout.tp, "pp": layout.pp, "sequence_parallel": layout.sequence_parallel,
                     "distributed_optimizer": True, "overlap_grad_reduce": True, "overlap_param_gather": True},
        "precision": precision,
        "optimizer": {"name": "adamw", "lr": 5.0e-4, "min_lr": 5.0e-5, "decay_style": "cosine",
                      "warmup_fraction": 0.01, "clip_grad": 0.5, "weight_decay": 0.1,
                      "adam_beta1": 0.9, "adam_beta2": 0.95},
        "train": {"micro_batch_size": layout.mbs, "global_batch_size": GLOBAL_BATCH, "seq_length": 2048,
                  "token_budget": TOKEN_BUDGET, "eval_interval": 1000, "eval_iters": 10},
        "data": {"source": "blend", "tokenizer": f"{ckpt}/tokenizer", "num_units": DEFAULT_NUM_UNITS,
                 "blend": [{"path": f"{data_dir(model)}/{kind}", "weight": weight, "kind": kind,
                            "name": kind} for kind, weight in BLEND],
                 "split": "998,1,1", "num_workers": 2,
                 # what the interleaved data was made with (checked against its sidecar; dynamic data is drawn with it)
                 "interleave": {"compat": "slamkit", "method": "poisson", "mean_span_words": 10.0, "speech_fraction": 0.3}},
        "checkpoint": {"save": f"runs/{recipe_name(model, gpu)}", "interval": 1000, "keep_last": 3},
        "logging": {"interval": 10, "tensorboard": True},
        "runtime": {"device": "cuda", "timeout_minutes": 10},
    }


def estimate(model: str, tree: dict):
    cfg = from_dict(tree)
    arch, padded = config_arch(cfg, preset=model)
    return cfg, arch, estimate_for_config(cfg, arch, padded, WORLD_SIZE)


def header(model: str, gpu: str, layout: Layout, est) -> str:
    gpu_name, numerics = GPUS[gpu]
    name = recipe_name(model, gpu)
    what = "bf16" if numerics == "bf16" else "FP8 hybrid (delayed scaling) on the Transformer Engine spec, bf16 weights"
    return f"""\
# SIMS continued pre-training of {HF_NAMES[model]} on 8x {gpu_name}, {what}.
# Generated by tools/make_recipes.py (edit the table there and re-run; do not edit by hand).
# Estimated memory: {est.peak_gib:.1f} GiB per GPU (tools/estimate_memory.py, docs/recipes.md).
#
#   python tools/convert_checkpoint.py hf-to-mcore --hf-dir /models/{HF_NAMES[model]} --out ckpt/{model}-slm --tp {layout.tp} --pp {layout.pp}
#   # units: tools/convert_kmeans.py --trust-pickle km500.bin km500.npy (the TWIST pickle, once), then
#   #   tools/extract_units.py --extractor hubert --model-dir mhubert-base-25hz --layer 11 --kmeans km500.npy --compat slamkit
#   # {data_dir(model)}/{{text,interleaved,speech}}.bin/.idx: tools/preprocess_data.py with ckpt/{model}-slm/tokenizer
#   #   (interleaved: --compat slamkit --method poisson --mean-span-words 10 --speech-fraction 0.3, the defaults)
#   torchrun --nproc_per_node=8 pretrain_slm.py --config examples/configs/{name}.yaml
#   sbatch -J {name} examples/slurm/pretrain.sbatch examples/configs/{name}.yaml   # preemptible, requeues
"""


def render_recipe(model: str, gpu: str, layout: Layout) -> tuple[str, object]:
    tree = recipe(model, gpu, layout)
    cfg, arch, est = estimate(model, tree)
    if not est.fits(GPU_MEMORY_GIB[GPUS[gpu][0]]):
        raise SystemExit(f"{recipe_name(model, gpu)}: estimated {est.peak_gib:.1f} GiB does not fit an 80 GB GPU; "
                         f"change its LAYOUTS entry")
    return header(model, gpu, layout, est) + yaml.safe_dump(tree, sort_keys=False), (cfg, arch, est)


def render_doc(rows: list[tuple[str, str, Layout, object]]) -> str:
    lines = [
        "# SIMS recipes",
        "",
        "Generated by `tools/make_recipes.py` from one table; do not edit by hand. Each recipe continues",
        "pre-training a converted text LM on the SIMS blend (text-only 0.2024, interleaved 0.5433,",
        "speech-only 0.2543), context 2048, AdamW lr 5e-4 cosine to 5e-5, 1% warmup, clip 0.5, global",
        f"batch {GLOBAL_BATCH} x 2048 tokens, token budget {TOKEN_BUDGET / 1e9:g}B tokens, distributed optimizer,",
        "Transformer Engine spec. A100: bf16. H100: FP8 hybrid (delayed scaling), bf16 weights.",
        "",
        "The data follow SlamKit's conventions (`data.interleave.compat: slamkit`, the default of every tool):",
        "HuBERT input padded with 40 zero samples each side (`extract_units.py --compat slamkit`), a speech span",
        "owning the unit runs whose end time lies in its words' time range, SlamKit's poisson sampler (lambda=10,",
        "eta=0.3: 0.64 of the words of a 10-word utterance are speech, 0.34 at 120 words) and its document layout.",
        "That is what the released SIMS models were trained on; training refuses datasets made under the other",
        "convention (docs/data.md).",
        "",
        "Memory per GPU is the estimate of `megatron_slm/models/memory.py` at the peak pipeline stage: bf16",
        "weights, fp32 gradients, Adam state + fp32 master weights sharded over DP, activations of the",
        "micro-batches in flight, logits, and a 2 GiB allowance for CUDA context and fragmentation. It is",
        "an estimate, not a measurement; every layout stays within 85% of 80 GB. Re-estimate a changed",
        "layout with `python tools/estimate_memory.py --config <recipe> --preset <model> [overrides]`.",
        "",
        "| recipe | model | params | GPUs | precision | layout (TP/PP/DP) | micro-batch x accum. | "
        "model states GiB | activations GiB | est. GiB/GPU | tokens/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for model, gpu, layout, (cfg, arch, est) in rows:
        peak = est.peak
        lay = est.layout
        extras = ", SP" if lay.sequence_parallel else ""
        extras += f", recompute {lay.recompute}" if lay.recompute != "none" else ""
        states = (peak.weight_bytes + peak.grad_bytes + peak.optimizer_bytes) / 2**30
        acts = (peak.activation_bytes + peak.logits_bytes) / 2**30
        lines.append(
            f"| [`{recipe_name(model, gpu)}`](../examples/configs/{recipe_name(model, gpu)}.yaml) | {HF_NAMES[model]} | "
            f"{param_counts(arch).total / 1e9:.2f}B | 8x {GPUS[gpu][0]} | {'FP8 hybrid' if lay.fp8 else 'bf16'} | "
            f"{lay.tp}/{lay.pp}/{lay.dp}{extras} | {lay.micro_batch_size} x {lay.num_microbatches} | "
            f"{states:.1f} | {acts:.1f} | {est.peak_gib:.1f} | not measured |")
    lines += ["", "Parameters include the 502 added speech-vocabulary rows. Tokens/s: no GPU measurement yet;",
              "`metrics.jsonl` of a run reports `tokens_per_sec`, `mfu` and `max_memory_gib` per step.", ""]
    return "\n".join(lines)


def outputs() -> dict[Path, str]:
    files, rows = {}, []
    for (model, gpu), layout in LAYOUTS.items():
        text, info = render_recipe(model, gpu, layout)
        files[CONFIG_DIR / f"{recipe_name(model, gpu)}.yaml"] = text
        rows.append((model, gpu, layout, info))
    files[DOC] = render_doc(rows)
    return files


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="do not write; exit 1 if a committed file differs")
    args = parser.parse_args(argv)
    stale = []
    for path, text in outputs().items():
        current = path.read_text() if path.is_file() else None
        if current == text:
            continue
        if args.check:
            stale.append(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path.relative_to(REPO)}")
    if stale:
        print("out of date (run python tools/make_recipes.py): " + ", ".join(str(p.relative_to(REPO)) for p in stale),
              file=sys.stderr)
        return 1
    if args.check:
        print("recipes and docs/recipes.md are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
