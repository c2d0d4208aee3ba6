"""A demo-sized speech-text LM on disk, both as a Megatron checkpoint and as its HF export, for
generation tests and the generation benchmark (no download: random weights, the bundled tokenizer).

    mc, hf = make_tiny_slm(tmp / "slm", num_units=100)     # tmp/slm/mc (Megatron), tmp/slm/hf (HF)
"""
from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TOKENIZER = REPO / "examples" / "tokenizer" / "tiny-bpe"
CORPUS = REPO / "examples" / "data" / "tiny_corpus"
# the shape tools/make_tiny_hf_model.py gives the demo's base model
DEMO_SHAPE = dict(hidden_size=64, intermediate_size=176, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=2)


def make_tiny_slm(root: str | Path, num_units: int = 100, tp: int = 2, pp: int = 2, seed: int = 0,
                  std: float = 0.1, max_position_embeddings: int = 1024, **shape) -> tuple[Path, Path]:
    """Random base LM -> Megatron checkpoint with `num_units` unit tokens (random, not mean, rows, so
    continuations vary) -> HF export. Returns (megatron dir, HF dir)."""
    from transformers import AutoTokenizer

    from megatron_slm.convert.hf_to_mcore import convert_hf_to_mcore
    from megatron_slm.convert.mcore_to_hf import convert_mcore_to_hf
    from megatron_slm.testing.random_hf import make_random_hf_model

    root = Path(root)
    vocab = len(AutoTokenizer.from_pretrained(str(TOKENIZER)))
    make_random_hf_model(root / "base_hf", "llama", TOKENIZER, seed=seed, std=std, vocab_size=vocab,
                         tie_word_embeddings=True, max_position_embeddings=max_position_embeddings,
                         rope_theta=10000.0, **{**DEMO_SHAPE, **shape})
    convert_hf_to_mcore(root / "base_hf", root / "mc", tp=tp, pp=pp, num_units=num_units, init="normal",
                        seed=seed, progress=False)
    convert_mcore_to_hf(root / "mc", root / "hf", progress=False)
    return root / "mc", root / "hf"
