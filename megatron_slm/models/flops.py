"""Parameter counts and training FLOPs for a `ModelArch`.

Two compute measures are used in this project:

* ``6 * N * D`` -- the scaling-law convention (Kaplan/Chinchilla/SIMS), N = non-embedding or
  total parameters, D = training tokens. `approx_training_flops`.
* The detailed per-token count used for throughput and MFU (`training_flops_per_token`):
  every matmul of the forward pass counted as 2 FLOPs per multiply-add --
  QKV, attention output, SwiGLU (three matrices), the output layer (V x h) -- plus the
  attention scores and the weighted sum of values, ``2 * 2 * s * heads * head_dim`` per
  layer, halved because causal attention only needs the lower triangle (what flash
  attention computes). Backward costs twice the forward, so training = 3x forward.
  Norms, softmax, rotary and the embedding lookup are ignored (< 1% for real shapes).
"""
from __future__ import annotations

from dataclasses import dataclass

from megatron_slm.models.arch import ModelArch


@dataclass(frozen=True)
class ParamCounts:
    total: int
    non_embedding: int  # everything but the input embedding and the (untied) output layer
    embedding: int


def _layer_linear_params(arch: ModelArch) -> int:
    d, h = arch.head_dim, arch.hidden_size
    q_out = arch.num_attention_heads * d
    kv_out = 2 * arch.num_query_groups * d
    attn = h * (q_out + kv_out) + q_out * h
    mlp = 3 * h * arch.ffn_hidden_size  # gate, up, down
    return attn + mlp


def param_counts(arch: ModelArch) -> ParamCounts:
    d = arch.head_dim
    per_layer = _layer_linear_params(arch) + 2 * arch.hidden_size  # + two RMSNorm weights
    if arch.qkv_bias:
        per_layer += (arch.num_attention_heads + 2 * arch.num_query_groups) * d
    if arch.qk_norm:
        per_layer += 2 * d  # one RMSNorm weight shared by all query heads, one by all key heads
    body = arch.num_layers * per_layer + arch.hidden_size  # + final norm
    embedding = arch.vocab_size * arch.hidden_size * (1 if arch.tie_embeddings else 2)
    return ParamCounts(total=body + embedding, non_embedding=body, embedding=embedding)


def forward_flops_per_token(arch: ModelArch, seq_length: int) -> float:
    matmul = 2 * (arch.num_layers * _layer_linear_params(arch) + arch.vocab_size * arch.hidden_size)
    attention = arch.num_layers * 2 * 2 * seq_length * arch.num_attention_heads * arch.head_dim / 2
    return float(matmul + attention)


def training_flops_per_token(arch: ModelArch, seq_length: int) -> float:
    return 3.0 * forward_flops_per_token(arch, seq_length)


def approx_training_flops(params: float, tokens: float) -> float:
    """C = 6 N D."""
    return 6.0 * params * tokens


# Dense bf16 peak of the accelerators we report MFU against (TFLOP/s, no sparsity).
PEAK_TFLOPS = {"A100": 312.0, "H100": 989.0, "H200": 989.0, "B200": 2250.0}


def peak_tflops_for(device_name: str) -> float | None:
    for key, value in PEAK_TFLOPS.items():
        if key in device_name.upper():
            return value
    return None
