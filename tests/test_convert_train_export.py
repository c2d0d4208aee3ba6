"""Convert a HF model, train it at TP=2, export it: the HF model reproduces the trainer's loss."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import PRETRAIN, REPO, TINY_CPU, TOKENIZER, read_metrics, run_python, run_torchrun

pytestmark = pytest.mark.slow


def test_train_from_converted_then_export_matches_validation_loss(tmp_path):
    from megatron_slm.testing.random_hf import make_random_hf_model
    from megatron_slm.training.batches import SyntheticDataset

    make_random_hf_model(tmp_path / "base", "llama", tokenizer_dir=TOKENIZER, vocab_size=512, hidden_size=64,
                         intermediate_size=176, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=1024, rope_theta=10000.0, tie_word_embeddings=True)
    convert = REPO / "tools" / "convert_checkpoint.py"
    run_python([convert, "hf-to-mcore", "--hf-dir", tmp_path / "base", "--out", tmp_path / "ckpt", "--tp", "2",
                "--num-units", "100", "--dtype", "fp32"], cwd=tmp_path)
    run = tmp_path / "run"
    run_torchrun(2, PRETRAIN, ["--config", TINY_CPU, f"model.from={tmp_path / 'ckpt'}",
                                               "parallel.tp=2", "train.iters=3", f"checkpoint.save={run}"],
                 cwd=tmp_path)
    run_python([convert, "mcore-to-hf", "--mcore-dir", run, "--out", tmp_path / "hf"], cwd=tmp_path)

    _, valid = read_metrics(run)
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    vocab = config["vocab_size"]
    assert vocab == 512 + 100 + 2  # padding trimmed
    # The trainer's validation set: synthetic samples 0..7 of the validation seed.
    from megatron_slm.config import load_config

    cfg = load_config(TINY_CPU)
    ds = SyntheticDataset(vocab, cfg.train.seq_length, cfg.train.seed + 1)
    n = cfg.train.eval_iters * cfg.train.global_batch_size
    tokens = torch.stack([torch.from_numpy(ds[i]["tokens"]) for i in range(n)])
    labels = torch.stack([torch.from_numpy(ds[i]["labels"]) for i in range(n)])
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(tokens).logits
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, vocab), labels.reshape(-1)).item()
    assert abs(loss - valid[-1]["lm_loss"]) < 1e-4, (loss, valid[-1]["lm_loss"])
