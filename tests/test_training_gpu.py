"""GPU paths: Transformer Engine spec, FP8, NCCL, async checkpoint save. Skipped without CUDA."""
from __future__ import annotations

import importlib.util

import pytest
import torch

from conftest import PRETRAIN, TINY_CPU, read_metrics, run_torchrun

pytestmark = [pytest.mark.gpu, pytest.mark.slow]
GPU = ["runtime.device=cuda", "model.spec=te", "precision.dtype=bf16", "model.hidden_size=256",
       "model.ffn_hidden_size=704", "model.num_attention_heads=8", "model.num_query_groups=4",
       "train.seq_length=256"]
needs_te = pytest.mark.skipif(importlib.util.find_spec("transformer_engine") is None,
                              reason="needs Transformer Engine")


def n_gpus() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@needs_te
def test_te_spec_bf16_trains_on_nccl(tmp_path):
    run_torchrun(1, PRETRAIN, ["--config", TINY_CPU, *GPU, "train.iters=6", f"checkpoint.save={tmp_path / 'r'}"],
                 cwd=tmp_path)
    train, _ = read_metrics(tmp_path / "r")
    assert train[-1]["lm_loss"] < train[0]["lm_loss"]
    assert train[-1]["max_memory_gib"] > 0


@needs_te
@pytest.mark.parametrize("recipe", ["delayed", "tensorwise"])
def test_fp8_hybrid_trains(tmp_path, recipe):
    run_torchrun(1, PRETRAIN, ["--config", TINY_CPU, *GPU, "precision.fp8=hybrid", f"precision.fp8_recipe={recipe}",
                               "train.iters=6"], cwd=tmp_path)
    train, _ = read_metrics(tmp_path)
    assert all(l["lm_loss"] == l["lm_loss"] for l in train)  # finite
    assert train[-1]["lm_loss"] < train[0]["lm_loss"]


@needs_te
def test_async_save_then_resume(tmp_path):
    args = ["--config", TINY_CPU, *GPU, "train.iters=4", "checkpoint.interval=2", "checkpoint.async_save=true",
            f"checkpoint.save={tmp_path / 'r'}"]
    run_torchrun(1, PRETRAIN, args, cwd=tmp_path)
    assert (tmp_path / "r" / "latest_checkpointed_iteration.txt").read_text() == "4"
    run_torchrun(1, PRETRAIN, args[:-3] + ["train.iters=6", f"checkpoint.save={tmp_path / 'r'}"], cwd=tmp_path)
    train, _ = read_metrics(tmp_path / "r")
    assert train[-1]["iteration"] == 6


@needs_te
@pytest.mark.skipif(n_gpus() < 2, reason="needs 2 GPUs")
def test_tp2_sequence_parallel_matches_tp1(tmp_path):
    base = ["--config", TINY_CPU, *GPU, "precision.dtype=fp32"]
    init = tmp_path / "init"
    run_torchrun(1, PRETRAIN, [*base, "train.iters=0", f"checkpoint.save={init}"], cwd=tmp_path)
    losses = {}
    for name, n, extra in (("tp1", 1, []), ("tp2sp", 2, ["parallel.tp=2", "parallel.sequence_parallel=true"])):
        cwd = tmp_path / name
        cwd.mkdir()
        run_torchrun(n, PRETRAIN, [*base, "train.iters=3", f"checkpoint.load={init}",
                                   "checkpoint.load_optimizer=false", *extra], cwd=cwd)
        losses[name] = [l["lm_loss"] for l in read_metrics(cwd)[0]]
    for a, b in zip(losses["tp1"], losses["tp2sp"]):
        assert abs(a - b) < 1e-3 * abs(a)
