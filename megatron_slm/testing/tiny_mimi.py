"""A small random `MimiModel` (0.6M parameters) saved to a directory, for tests and benchmarks.

A freshly initialised Mimi has all-zero codebooks, so every code would be 0: the codebooks are
given random entries (`embed_sum`, with `cluster_usage` and `initialized` set to 1, which
`save_pretrained` keeps), so codes vary with the audio.
"""
from __future__ import annotations

import os

import torch

TINY = dict(hidden_size=64, num_filters=8, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
            head_dim=16, intermediate_size=128, codebook_size=256, codebook_dim=32,
            vector_quantization_hidden_dimension=32, sliding_window=64, upsample_groups=64)


def randomize_codebooks(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name.endswith("codebook.embed_sum"):
                buf.copy_(torch.randn(buf.shape, generator=g))
            elif name.endswith(("codebook.cluster_usage", "codebook.initialized")):
                buf.fill_(1)
    return model


def make_mimi(seed: int = 0, **overrides):
    """A random MimiModel (the tiny config unless `overrides` say otherwise; `TINY` keys apply)."""
    from transformers import MimiConfig, MimiModel

    torch.manual_seed(seed)
    cfg = MimiConfig(**{**TINY, **overrides})
    return randomize_codebooks(MimiModel(cfg).eval(), seed)


def save_tiny_mimi(directory: str | os.PathLike, seed: int = 0, **overrides) -> str:
    model = make_mimi(seed, **overrides)
    model.save_pretrained(str(directory))
    return str(directory)
