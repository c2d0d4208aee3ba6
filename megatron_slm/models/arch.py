"""`ModelArch`: the one description of a Llama-family decoder.

The model provider, the checkpoint converter, the FLOPs/parameter counter, the memory estimate
and the scaling planner all read it; `slm_model.json` stores it (`models/record.py`). Its
`vocab_size` is the number of token ids the model embeds, before Megatron's padding.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class ModelArch:
    family: str  # "llama" | "qwen2" | "qwen3" | "mistral": decides the HF mapping, not the math
    num_layers: int
    hidden_size: int
    ffn_hidden_size: int
    num_attention_heads: int
    num_query_groups: int
    vocab_size: int  # unpadded number of token ids the model embeds
    kv_channels: Optional[int] = None  # head dim; None = hidden_size / num_attention_heads
    max_position_embeddings: int = 131072
    rotary_base: float = 500000.0
    rope_scaling: bool = False  # Llama-3 frequency scaling (factor below)
    rope_scaling_factor: float = 32.0
    qkv_bias: bool = False  # Qwen2
    qk_norm: bool = False  # Qwen3: RMSNorm over each query and key head (Megatron qk_layernorm)
    tie_embeddings: bool = True
    norm_epsilon: float = 1e-5

    @property
    def head_dim(self) -> int:
        return self.kv_channels or self.hidden_size // self.num_attention_heads

    def with_speech_units(self, num_units: int) -> "ModelArch":
        """The same shape with `num_units` unit tokens plus <speech> and <text> appended."""
        return dataclasses.replace(self, vocab_size=self.vocab_size + num_units + 2)

    def replace(self, **changes) -> "ModelArch":
        return dataclasses.replace(self, **changes)


def padded_vocab_size(vocab_size: int, divisible_by: int, tp: int) -> int:
    """Megatron pads the embedding so every TP rank holds an equal slice of a nice size."""
    multiple = divisible_by * tp
    return -(-vocab_size // multiple) * multiple



def padded_vocab_for_layout(vocab_size: int, divisible_by: int, tp: int, recorded: Optional[int] = None) -> int:
    """The embedding rows a model built at `tp` has: a checkpoint's recorded padding when it is
    still a multiple of divisible_by x tp (its weights then load unchanged), else a fresh one.
    Loading re-pads the saved rows either way (`checkpoint/dist.py`): padding rows are masked
    out of every softmax, so they are never trained or scored and their count changes nothing."""
    if recorded is not None and recorded >= vocab_size and recorded % (divisible_by * tp) == 0:
        return recorded
    return padded_vocab_size(vocab_size, divisible_by, tp)
