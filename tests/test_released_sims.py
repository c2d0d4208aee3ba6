"""A released-SIMS-style checkpoint end to end: an HF model whose tokenizer already holds
<Un0..K-1>, <speech>, <text> (SlamKit's add_tokens layout, pad_token_id = 0) is scored with
eval_slm --hf-dir, imported by hf-to-mcore without a second extension (K inferred, every row
copied), trained further on an interleaved blend and exported back with identical ids."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import CONVERT, PRETRAIN, REPO, TINY_CPU, TOKENIZER, run_python, run_torchrun

pytestmark = pytest.mark.slow
K = 30


def _slamkit_tokenizer(out):
    """What SlamKit saves with a model: the base tokenizer + add_tokens(units, markers), pad id 0."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(TOKENIZER))
    tok.pad_token_id = 0
    tok.add_tokens([f"<Un{k}>" for k in range(K)] + ["<speech>", "<text>"])
    tok.save_pretrained(str(out))
    return tok


def _lm_head(d):
    from safetensors.torch import load_file

    return load_file(str(d / "model.safetensors"))["lm_head.weight"]


def test_released_sims_checkpoint_end_to_end(tmp_path):
    from transformers import AutoTokenizer

    from megatron_slm.data.samples import make_sample
    from megatron_slm.testing.random_hf import make_random_hf_model
    from megatron_slm.testing.synthetic_units import write_synthetic_corpus
    from megatron_slm.vocab import SpeechVocab

    tok = _slamkit_tokenizer(tmp_path / "tok")
    sims = make_random_hf_model(tmp_path / "sims", "llama", tokenizer_dir=tmp_path / "tok", vocab_size=len(tok),
                                hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4,
                                num_key_value_heads=2, max_position_embeddings=1024, rope_theta=10000.0,
                                tie_word_embeddings=False)
    vocab = SpeechVocab.from_pretrained(sims)
    assert (vocab.num_units, vocab.vocab_size) == (K, len(tok))
    # SlamKit's pad id 0 is BOS here ('!' in Llama-3 / Qwen2.5): it must not mask real targets
    assert not vocab.has_pad
    sample = make_sample(np.array([vocab.bos, vocab.unit_offset, vocab.eod, vocab.bos, vocab.unit_offset + 1]), vocab,
                         -1)
    assert sample["loss_mask"].tolist() == [1, 1, 1, 1]

    corpus = write_synthetic_corpus(str(tmp_path / "corpus"), 80, k=K, seed=2)
    ws = tmp_path / "ws.jsonl"
    run_python([REPO / "tools" / "prepare_eval_data.py", "word-shuffle", "--units-file", corpus.units,
                "--alignments", corpus.alignments, "--out", ws], cwd=tmp_path)

    # 1. scored as released
    run_python([REPO / "tools" / "eval_slm.py", "--hf-dir", sims, "--items", ws, "--restrict", "speech",
                "--item-scores", tmp_path / "s0.jsonl", "--bootstrap", "10"], cwd=tmp_path)
    assert len((tmp_path / "s0.jsonl").read_text().splitlines()) > 20

    # 2. imported without a second extension: every row copied, logits equal
    out = run_python([CONVERT, "hf-to-mcore", "--hf-dir", sims, "--out", tmp_path / "ck", "--dtype", "fp32"],
                     cwd=tmp_path).stdout
    assert "new rows: none (tokenizer already has the units)" in out
    conv = json.loads((tmp_path / "ck" / "conversion.json").read_text())
    assert conv["already_extended"] and conv["num_units"] == K and conv["vocab_size"] == len(tok)
    assert AutoTokenizer.from_pretrained(str(tmp_path / "ck" / "tokenizer")).get_vocab() == tok.get_vocab()
    run_python([CONVERT, "verify", "--hf-dir", sims, "--mcore-dir", tmp_path / "ck"], cwd=tmp_path)

    # 3. trained further on interleaved data made with the released tokenizer
    run_python([REPO / "tools" / "preprocess_data.py", "interleaved", "--tokenizer", sims, "--units", corpus.units,
                "--alignments", corpus.alignments, "--out-prefix", tmp_path / "inter", "--quiet"], cwd=tmp_path)
    run = tmp_path / "run"
    run_torchrun(1, PRETRAIN,
                 ["--config", TINY_CPU, f"model.from={tmp_path / 'ck'}", "train.iters=3", f"checkpoint.save={run}",
                  "data.source=blend", "data.split=90,5,5",
                  f"data.blend=[{{path: {tmp_path / 'inter'}, weight: 1, kind: interleaved}}]"], cwd=tmp_path)

    # 4. exported back: the same ids, trained weights
    run_python([CONVERT, "mcore-to-hf", "--mcore-dir", run, "--out", tmp_path / "hf"], cwd=tmp_path)
    assert AutoTokenizer.from_pretrained(str(tmp_path / "hf")).get_vocab() == tok.get_vocab()
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["vocab_size"] == len(tok)
    before, after = _lm_head(sims), _lm_head(tmp_path / "hf")
    assert before.shape == after.shape and not torch.equal(before, after)
    run_python([REPO / "tools" / "eval_slm.py", "--hf-dir", tmp_path / "hf", "--items", ws, "--restrict", "speech",
                "--item-scores", tmp_path / "s1.jsonl", "--bootstrap", "10"], cwd=tmp_path)
    s0 = [json.loads(x)["positive"] for x in (tmp_path / "s0.jsonl").read_text().splitlines()]
    s1 = [json.loads(x)["positive"] for x in (tmp_path / "s1.jsonl").read_text().splitlines()]
    assert len(s0) == len(s1) and s0 != s1
