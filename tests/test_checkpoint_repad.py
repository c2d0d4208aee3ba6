"""Vocabulary padding independent of TP: a checkpoint loads at any TP that splits its heads.

A checkpoint converted at TP=1 pads its vocabulary to a multiple of 128 (614 ids -> 640 rows); at
TP=2 the model pads to a multiple of 256 (768). Loading re-pads: the saved rows are read, the new
padding rows are zero, and since padding is masked out of every softmax nothing changes. (Before,
the run plan and the inference loaders refused such a checkpoint: "convert it again with --tp 2".)
"""
from __future__ import annotations

import json

import pytest
import torch

from conftest import PRETRAIN, REPO, TINY_CPU, read_metrics, run_python, run_torchrun
from megatron_slm.testing.tiny_slm import CORPUS, TOKENIZER

K = 100
SHAPE = dict(hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=1024, rope_theta=10000.0)


def _convert(tmp_path, divisible_by: int = 128):
    from megatron_slm.convert.hf_to_mcore import convert_hf_to_mcore
    from megatron_slm.testing.random_hf import make_random_hf_model

    make_random_hf_model(tmp_path / "base", "llama", tokenizer_dir=TOKENIZER, vocab_size=512, std=0.1,
                         tie_word_embeddings=True, **SHAPE)
    summary = convert_hf_to_mcore(tmp_path / "base", tmp_path / "ckpt", tp=1, num_units=K, init="normal",
                                  dtype="fp32", make_vocab_size_divisible_by=divisible_by, progress=False)
    return summary


def _logits(models, tokens):
    from megatron_slm.convert.verify import _megatron_logits

    return _megatron_logits(models, tokens)


def test_loading_re_pads_the_vocabulary_and_changes_no_logit(tmp_path):
    """In one process: a checkpoint saved with 614 rows (no padding) loads into a 640-row model;
    the text and unit logits are exactly those of the unpadded load, the new rows are zero."""
    from megatron_slm.checkpoint.inference import load_for_inference
    from megatron_slm.runtime.distributed import destroy_distributed

    summary = _convert(tmp_path, divisible_by=1)
    assert summary.padded_vocab_size == 614
    tokens = torch.randint(0, 614, (2, 12), generator=torch.Generator().manual_seed(0))
    out = {}
    for divisible_by in (1, 128):
        loaded = load_for_inference(tmp_path / "ckpt", divisible_by=divisible_by)
        out[divisible_by] = (_logits(loaded.models, tokens), loaded)
        emb = loaded.models[0].embedding.word_embeddings.weight
        assert emb.shape[0] == loaded.padded_vocab_size
        if divisible_by == 128:
            assert loaded.padded_vocab_size == 640 and emb[614:].abs().sum() == 0
        destroy_distributed()
    plain, padded = out[1][0], out[128][0]
    assert padded.shape[-1] == 640 and plain.shape[-1] == 614
    torch.testing.assert_close(padded[..., :614], plain, rtol=0, atol=0)


@pytest.mark.slow
def test_converted_at_tp1_trains_at_tp2_and_tp1_alike_and_generates_at_tp2_as_hf(tmp_path):
    """Convert once at TP=1; 3 training steps at TP=2 and at TP=1 from it give the same losses
    (the TP=2 model re-pads 640 -> 768 rows); greedy generation at TP=2 equals HF's."""
    from megatron_slm.commands.generate import main as generate_main
    from megatron_slm.convert.mcore_to_hf import convert_mcore_to_hf

    assert _convert(tmp_path).padded_vocab_size == 640
    losses = {}
    for tp in (2, 1):
        run = tmp_path / f"run_tp{tp}"
        args = ["--config", TINY_CPU, f"model.from={tmp_path / 'ckpt'}", f"parallel.tp={tp}", "train.iters=3",
                f"checkpoint.save={run}"]
        if tp == 1:
            run_python([PRETRAIN, *args], cwd=tmp_path)
        else:
            run_torchrun(tp, PRETRAIN, args, cwd=tmp_path)
        train, _ = read_metrics(run)
        losses[tp] = [line["lm_loss"] for line in train]
        assert json.loads((run / "slm_model.json").read_text())["padded_vocab_size"] == 128 * tp * (5 if tp == 1 else 3)
    assert len(losses[1]) == 3
    assert max(abs(a - b) for a, b in zip(losses[1], losses[2])) < 1e-4, losses

    # generation at TP=2 from the TP=1 conversion, against its HF export
    convert_mcore_to_hf(tmp_path / "ckpt", tmp_path / "hf", progress=False)
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["vocab_size"] == 614  # trimmed
    common = ["--prompt-units", str(CORPUS / "units.jsonl"), "--prompt-seconds", "2", "--limit", "4", "--greedy",
              "--max-new-tokens", "16", "--output-modality", "speech"]
    ref, got = tmp_path / "hf.jsonl", tmp_path / "tp2.jsonl"
    assert generate_main(["--hf-dir", str(tmp_path / "hf"), *common, "--out", str(ref)]) == 0
    run_torchrun(2, REPO / "tools" / "generate.py", ["--mcore-dir", tmp_path / "ckpt", "--tp", "2", *common,
                                                     "--out", got], cwd=REPO, timeout=600)
    rows = lambda p: {r["id"]: r["generated_ids"] for r in map(json.loads, p.read_text().splitlines())}  # noqa: E731
    assert rows(got) == rows(ref) and sum(map(len, rows(ref).values())) > 20
