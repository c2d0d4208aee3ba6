"""Model presets: the shapes we train, as plain data (the type is `models/arch.py`).

Presets carry the public shapes of the base models SIMS continues from; their `vocab_size` is
the base text vocabulary (the HF tokenizer length) -- speech units are added on top by
`ModelArch.with_speech_units` (SlamKit id layout, see `megatron_slm.vocab`).
"""
from __future__ import annotations

from typing import Optional

from megatron_slm.models.arch import ModelArch
from megatron_slm.vocab import DEFAULT_NUM_UNITS


_LLAMA32 = dict(family="llama", vocab_size=128256, rotary_base=500000.0, rope_scaling=True,
                rope_scaling_factor=32.0, tie_embeddings=True, norm_epsilon=1e-5,
                max_position_embeddings=131072)
_QWEN25 = dict(family="qwen2", vocab_size=151665, rotary_base=1000000.0, qkv_bias=True,
               norm_epsilon=1e-6, max_position_embeddings=32768)
# Qwen3 (dense): q/k RMSNorm, head dim 128 whatever the width; tokenizer 151669 ids, embedding 151936 rows
_QWEN3 = dict(family="qwen3", vocab_size=151669, rotary_base=1000000.0, qk_norm=True, kv_channels=128,
              norm_epsilon=1e-6, max_position_embeddings=40960)

PRESETS: dict[str, ModelArch] = {
    # Tiny shapes for CPU tests and the demo; vocab sized for the bundled tokenizer + units.
    "tiny": ModelArch(family="llama", num_layers=4, hidden_size=64, ffn_hidden_size=176,
                      num_attention_heads=4, num_query_groups=2, vocab_size=1024,
                      max_position_embeddings=4096, rotary_base=10000.0),
    "tiny-qwen2": ModelArch(family="qwen2", num_layers=4, hidden_size=64, ffn_hidden_size=176,
                            num_attention_heads=4, num_query_groups=2, vocab_size=1024,
                            max_position_embeddings=4096, rotary_base=10000.0, qkv_bias=True,
                            norm_epsilon=1e-6),
    **{f"micro-{layers}x{hidden}": ModelArch(  # CPU scaling sweeps (examples/mini_study.sh): head dim 16
        family="llama", num_layers=layers, hidden_size=hidden, ffn_hidden_size=ffn,
        num_attention_heads=hidden // 16, num_query_groups=groups, vocab_size=512,
        max_position_embeddings=4096, rotary_base=10000.0)
       for layers, hidden, ffn, groups in ((2, 16, 48, 1), (2, 32, 96, 1), (2, 48, 128, 1), (3, 64, 176, 2),
                                           (4, 80, 224, 1), (4, 96, 256, 2), (5, 112, 304, 1), (6, 128, 352, 2))},
    "llama3.2-1b": ModelArch(num_layers=16, hidden_size=2048, ffn_hidden_size=8192,
                             num_attention_heads=32, num_query_groups=8, kv_channels=64,
                             **_LLAMA32),
    "llama3.2-3b": ModelArch(num_layers=28, hidden_size=3072, ffn_hidden_size=8192,
                             num_attention_heads=24, num_query_groups=8, kv_channels=128,
                             **_LLAMA32),
    "qwen2.5-0.5b": ModelArch(num_layers=24, hidden_size=896, ffn_hidden_size=4864,
                              num_attention_heads=14, num_query_groups=2, tie_embeddings=True,
                              **_QWEN25),
    "qwen2.5-1.5b": ModelArch(num_layers=28, hidden_size=1536, ffn_hidden_size=8960,
                              num_attention_heads=12, num_query_groups=2, tie_embeddings=True,
                              **_QWEN25),
    "qwen2.5-3b": ModelArch(num_layers=36, hidden_size=2048, ffn_hidden_size=11008,
                            num_attention_heads=16, num_query_groups=2, tie_embeddings=True,
                            **_QWEN25),
    "qwen2.5-7b": ModelArch(num_layers=28, hidden_size=3584, ffn_hidden_size=18944,
                            num_attention_heads=28, num_query_groups=4, tie_embeddings=False,
                            **_QWEN25),
    "qwen3-0.6b": ModelArch(num_layers=28, hidden_size=1024, ffn_hidden_size=3072, num_attention_heads=16,
                            num_query_groups=8, tie_embeddings=True, **_QWEN3),
    "qwen3-1.7b": ModelArch(num_layers=28, hidden_size=2048, ffn_hidden_size=6144, num_attention_heads=16,
                            num_query_groups=8, tie_embeddings=True, **_QWEN3),
    "qwen3-4b": ModelArch(num_layers=36, hidden_size=2560, ffn_hidden_size=9728, num_attention_heads=32,
                          num_query_groups=8, tie_embeddings=True, **_QWEN3),
    "qwen3-8b": ModelArch(num_layers=36, hidden_size=4096, ffn_hidden_size=12288, num_attention_heads=32,
                          num_query_groups=8, tie_embeddings=False, **_QWEN3),
}

# Families for the scaling planner: the sizes an isoFLOP sweep may choose from.
FAMILIES: dict[str, list[str]] = {
    "llama3.2": ["llama3.2-1b", "llama3.2-3b"],
    "qwen2.5": ["qwen2.5-0.5b", "qwen2.5-1.5b", "qwen2.5-3b", "qwen2.5-7b"],
    "qwen3": ["qwen3-0.6b", "qwen3-1.7b", "qwen3-4b", "qwen3-8b"],
    # 17k..1.1M parameters with the bundled 512-token tokenizer and 100 units: sweeps on a laptop
    "micro": ["micro-2x16", "micro-2x32", "micro-2x48", "micro-3x64", "micro-4x80", "micro-4x96", "micro-5x112",
              "micro-6x128"],
}


def get_preset(name: str) -> ModelArch:
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown model preset {name!r}; known: {', '.join(sorted(PRESETS))}")


def trained_arch(preset: str, cfg, tokenizer_vocab_size: Optional[int] = None) -> ModelArch:
    """The architecture the trainer builds for `preset` under config `cfg` (vocabulary included).

    Real data comes with the extended tokenizer (text + units + <speech>, <text>): its length
    when known (`tokenizer_vocab_size`, what the trainer uses), else the preset's text vocabulary
    plus the units; synthetic smoke-test data uses the preset's vocabulary; `model.vocab_size`
    overrides all.
    """
    arch = PRESETS[preset]
    if cfg.model.vocab_size:
        return arch.replace(vocab_size=cfg.model.vocab_size)
    if tokenizer_vocab_size and cfg.data.source != "synthetic":
        return arch.replace(vocab_size=tokenizer_vocab_size)
    return arch if cfg.data.source == "synthetic" else arch.with_speech_units(cfg.data.num_units or DEFAULT_NUM_UNITS)
