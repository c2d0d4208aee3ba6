"""The memory estimator against hand-computed numbers, and the SIMS recipes against the planner."""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import REPO
from megatron_slm.config import load_config
from megatron_slm.models import memory
from megatron_slm.models.flops import param_counts
from megatron_slm.models.memory import Layout, estimate_memory
from megatron_slm.models.arch import ModelArch, padded_vocab_size
from megatron_slm.models.presets import PRESETS
from megatron_slm.models.record import write_model_record
from megatron_slm.data.storage import SIDECAR_FORMAT, sidecar_path, write_json_atomic
from megatron_slm.training import plan as plan_module
from megatron_slm.training.optim import warmup_steps

RECIPES = sorted((REPO / "examples" / "configs").glob("sims_*.yaml"))
MODELS = ("llama3.2-1b", "llama3.2-3b", "qwen2.5-0.5b", "qwen2.5-1.5b", "qwen2.5-3b", "qwen2.5-7b",
          "qwen3-0.6b", "qwen3-1.7b", "qwen3-4b", "qwen3-8b")

# h=64, F=128, 4 query heads of d=16, 2 KV groups, 4 layers, tied embeddings, vocab 1000 -> 1024.
SMALL = ModelArch(family="llama", num_layers=4, hidden_size=64, ffn_hidden_size=128, num_attention_heads=4,
                  num_query_groups=2, vocab_size=1000, kv_channels=16)
# TP=2, PP=2, DP=2, distributed optimizer, bf16, 2 sequences of 8 tokens per microbatch, 4 microbatches.
BASE = Layout(tp=2, pp=2, dp=2, distributed_optimizer=True, micro_batch_size=2, seq_length=8, num_microbatches=4)


def test_parameters_and_model_states_by_hand():
    # One layer: QKV 64x(64+2*2*16) + O 64x64 = 12288, MLP 3x64x128 = 24576, norms 2x64 = 128.
    # Stage 0: 2 layers x (36864/2 + 128) + embedding 1024x64/2 = 37120 + 32768 = 69888.
    # Stage 1: 37120 + final norm 64 + the tied output layer's own copy (PP > 1) 32768 = 69952.
    est = estimate_memory(SMALL, 1024, BASE, overhead_gib=0)
    assert [s.params for s in est.stages] == [69888, 69952]
    # bf16 weights 2 B + fp32 grads 4 B + (Adam 8 B + fp32 master 4 B) / DP 2 = 12 B per parameter.
    s1 = est.stages[1]
    assert (s1.weight_bytes, s1.grad_bytes, s1.optimizer_bytes) == (2 * 69952, 4 * 69952, 6 * 69952)
    # Without the distributed optimizer every rank holds the whole Adam state: 18 B per parameter.
    plain = estimate_memory(SMALL, 1024, Layout(**{**BASE.__dict__, "distributed_optimizer": False}), overhead_gib=0)
    assert plain.stages[1].optimizer_bytes == 12 * 69952
    # fp32 training keeps no master copy: 4 + 4 + 8 / DP.
    fp32 = estimate_memory(SMALL, 1024, Layout(**{**BASE.__dict__, "dtype": "fp32"}), overhead_gib=0)
    s = fp32.stages[1]
    assert (s.weight_bytes + s.grad_bytes + s.optimizer_bytes) / s.params == 4 + 4 + 8 / 2


def test_activations_and_pipeline_by_hand():
    # Per token of one layer, bf16: norm inputs 2x64x2 = 256, QKV/FC1 inputs 256 (not sharded without
    # SP), q,k,v (4+4)x16/2x2 = 128, attention output 64/2x2 = 64, FC1 output 2x128/2x2 = 256,
    # SwiGLU output 128/2x2 = 128 -> 1088 B; x 16 tokens per microbatch = 17408 B.
    assert memory.layer_activation_bytes(SMALL, BASE) == 17408
    est = estimate_memory(SMALL, 1024, BASE, overhead_gib=0)
    # 1F1B: stage 0 holds min(PP - 0, M) = 2 microbatches of its 2 layers, stage 1 holds 1.
    assert [s.activation_bytes for s in est.stages] == [4 * 17408, 2 * 17408]
    # Last stage logits: 16 tokens x 1024/2 vocab x (2 B bf16 + 4 B fp32 copy) + final norm and output
    # layer inputs 2 x 16 x 64 x 2 B.
    assert est.stages[1].logits_bytes == 16 * 512 * 6 + 2 * 16 * 64 * 2
    assert est.stages[0].logits_bytes == 0
    assert est.peak_stage == 1 and est.peak.total_bytes == 69952 * 12 + 2 * 17408 + 53248

    # Sequence parallel shards the norm inputs and the QKV/FC1 inputs too: 128+128+128+64+256+128 = 832.
    sp = Layout(**{**BASE.__dict__, "sequence_parallel": True})
    assert memory.layer_activation_bytes(SMALL, sp) == 832 * 16
    # Unfused attention keeps the probabilities: heads 4 x 8 keys / TP 2 x 2 B = 32 B more per token;
    # selective recompute drops them again.
    unfused = Layout(**{**BASE.__dict__, "flash_attention": False})
    assert memory.layer_activation_bytes(SMALL, unfused) == (1088 + 32) * 16
    assert memory.layer_activation_bytes(SMALL, Layout(**{**unfused.__dict__, "recompute": "selective"})) == 17408
    # FP8 keeps the four linear-layer inputs in one byte: 1088 - (128 + 32 + 64) = 864.
    assert memory.layer_activation_bytes(SMALL, Layout(**{**BASE.__dict__, "fp8": True})) == 864 * 16
    # Full recompute: 4 held layer inputs of 16 x 64 x 2 B, plus one layer rebuilt in backward.
    full = estimate_memory(SMALL, 1024, Layout(**{**BASE.__dict__, "recompute": "full"}), overhead_gib=0)
    assert full.stages[0].activation_bytes == 4 * 2048 + 17408
    # Interleaved 1F1B, 2 chunks of 1 layer: stage 0 holds 2(PP-1) + (v-1)PP + 1 = 5, stage 1 holds 3.
    vpp = estimate_memory(SMALL, 1024, Layout(**{**BASE.__dict__, "vpp": 2}), overhead_gib=0)
    assert [s.activation_bytes for s in vpp.stages] == [5 * 17408, 3 * 17408]
    # Fewer microbatches than stages: only those are in flight.
    few = estimate_memory(SMALL, 1024, Layout(**{**BASE.__dict__, "num_microbatches": 1}), overhead_gib=0)
    assert few.stages[0].activation_bytes == 2 * 17408


def test_a_real_model_counts_every_parameter_once():
    arch = PRESETS["qwen2.5-7b"].with_speech_units(500)  # untied embeddings
    padded = padded_vocab_size(arch.vocab_size, 128, 1)
    est = estimate_memory(arch, padded, Layout(seq_length=2048), overhead_gib=0)
    assert est.stages[0].params == param_counts(arch).total + 2 * (padded - arch.vocab_size) * arch.hidden_size
    # With TP=2 and PP=2 the four ranks of one DP replica hold the same parameters minus replication.
    sharded = estimate_memory(arch, padded, Layout(tp=2, pp=2, seq_length=2048), overhead_gib=0)
    per_replica = 2 * sum(s.params for s in sharded.stages)
    norms = 2 * arch.hidden_size * arch.num_layers + arch.hidden_size
    assert per_replica == est.stages[0].params + norms  # norms are replicated across TP


def _load_tool(name: str):
    return importlib.import_module(f"megatron_slm.commands.{name}")


def test_recipes_and_table_are_generated_and_current(capsys):
    assert len(RECIPES) == 2 * len(MODELS)
    assert {p.stem for p in RECIPES} == {f"sims_{m}_{g}" for m in MODELS for g in ("a100", "h100")}
    assert _load_tool("make_recipes").main(["--check"]) == 0, capsys.readouterr().err
    table = (REPO / "docs" / "recipes.md").read_text()
    assert all(f"`{p.stem}`" in table for p in RECIPES)


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_recipe_plans_on_8_gpus(recipe, tmp_path, monkeypatch):
    """Each recipe passes every planner check once its checkpoint and data exist (made tiny here)."""
    cfg = load_config(recipe)
    model = recipe.stem.split("_")[1]
    arch = PRESETS[model].with_speech_units(cfg.data.num_units)
    monkeypatch.chdir(tmp_path)  # the recipes' relative ckpt/ and data/ paths resolve here
    write_model_info_dir = Path(cfg.model.from_)
    write_model_info_dir.mkdir(parents=True)
    # What `convert_checkpoint.py hf-to-mcore --tp <recipe tp>` records.
    write_model_record(write_model_info_dir, arch, padded_vocab_size(arch.vocab_size, 128, cfg.parallel.tp))
    identity = {"text_vocab_sha256": "x", "text_vocab_size": arch.vocab_size - cfg.data.num_units - 2,
                "num_units": cfg.data.num_units, "vocab_size": arch.vocab_size}
    vocab = SimpleNamespace(vocab_size=arch.vocab_size, num_units=cfg.data.num_units, source="tok",
                            identity=lambda: identity)
    for entry in cfg.data.blend:  # what tools/preprocess_data.py leaves (sidecar checked by the plan)
        Path(entry.path).parent.mkdir(parents=True, exist_ok=True)
        for suffix in (".bin", ".idx"):
            Path(entry.path + suffix).write_bytes(b"")
        write_json_atomic(sidecar_path(entry.path), {"format": SIDECAR_FORMAT, "kind": entry.kind, "mode": "static",
                                                     "identity": {"vocab": identity, "units": None}})
    monkeypatch.setattr(plan_module, "te_available", lambda: True)
    run = plan_module.make_plan(cfg, world_size=8, on_cuda=True, vocab=vocab)

    p, t, o = cfg.parallel, cfg.train, cfg.optimizer
    assert run.arch == arch
    assert run.dp * p.tp * p.pp == 8 and run.dp == 8 // (p.tp * p.pp)
    assert run.num_microbatches * t.micro_batch_size * run.dp == t.global_batch_size
    assert t.seq_length == 2048 and run.total_steps == math.ceil(t.token_budget / (t.global_batch_size * 2048))
    assert warmup_steps(cfg, run.total_steps) == math.ceil(0.01 * run.total_steps)
    assert (o.lr, o.min_lr, o.decay_style, o.clip_grad, o.name) == (5e-4, 5e-5, "cosine", 0.5, "adamw")
    assert [(e.kind, e.weight) for e in cfg.data.blend] == [("text", 0.2024), ("interleaved", 0.5433),
                                                           ("speech", 0.2543)]
    assert cfg.data.tokenizer == f"ckpt/{model}-slm/tokenizer" and cfg.model.from_ == f"ckpt/{model}-slm"
    assert p.distributed_optimizer and (p.sequence_parallel == (p.tp > 1))
    if recipe.stem.endswith("_h100"):
        assert cfg.precision.fp8 == "hybrid" and cfg.model.spec == "te"
    else:
        assert cfg.precision.fp8 is None and cfg.precision.dtype == "bf16"
    est = memory.estimate_for_config(cfg, run.arch, run.padded_vocab, 8)
    assert est.fits(memory.GPU_MEMORY_GIB["A100-80GB"]), f"{recipe.stem}: {est.peak_gib:.1f} GiB"


def test_estimate_memory_cli(capsys):
    tool = _load_tool("estimate_memory")
    recipe = str(REPO / "examples" / "configs" / "sims_qwen2.5-7b_a100.yaml")
    common = ["--config", recipe, "--preset", "qwen2.5-7b"]
    assert tool.main(common) == 0
    out = capsys.readouterr().out
    assert "tp 2 pp 1 dp 4 sp dist-opt" in out and "fits" in out and "NOT" not in out
    # An override that cannot fit is reported as such; a bad layout is one line and exit code 2.
    assert tool.main(common + ["parallel.tp=1", "parallel.sequence_parallel=false", "train.micro_batch_size=8"]) == 0
    assert "does NOT fit" in capsys.readouterr().out
    assert tool.main(common + ["--world-size", "6", "parallel.tp=4"]) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "world-size 6" in err
    assert tool.main(["--config", recipe]) == 2  # model.from not converted yet, no --preset
    assert "--preset" in capsys.readouterr().err
