"""The tensor transforms named in the family tables (HF <-> Megatron TP=1 layout).

QKV: HF keeps q (nh*d rows), k and v (ng*d rows each) apart; Megatron stacks them per query
group -- for each of the ng groups its nh/ng query heads, then its k head, then its v head --
so that a TP split of rows gives every rank whole groups. Biases follow the same layout.
SwiGLU: Megatron's linear_fc1 = [gate; up]; its sharded state dict splits the halves per TP
rank itself, so the TP=1 tensor is a plain concatenation.
"""
from __future__ import annotations

import torch

from megatron_slm.convert.families import TensorMap
from megatron_slm.models.arch import ModelArch


def _qkv_split_sizes(arch: ModelArch) -> tuple[int, int, int]:
    per_group = arch.num_attention_heads // arch.num_query_groups
    return per_group * arch.head_dim, arch.head_dim, arch.head_dim


def to_mcore(tm: TensorMap, hf: list[torch.Tensor], arch: ModelArch) -> torch.Tensor:
    if tm.how in ("copy", "vocab"):
        (t,) = hf
        return t
    if tm.how == "gate_up":
        return torch.cat(hf, dim=0)
    if tm.how == "qkv":
        q, k, v = hf
        g, rest = arch.num_query_groups, q.shape[1:]
        grouped = [q.reshape(g, -1, *rest), k.reshape(g, -1, *rest), v.reshape(g, -1, *rest)]
        return torch.cat(grouped, dim=1).reshape(-1, *rest)
    raise ValueError(f"unknown transform {tm.how!r}")


def to_hf(tm: TensorMap, t: torch.Tensor, arch: ModelArch) -> list[torch.Tensor]:
    """Inverse of `to_mcore`: the HF tensors in the order of `tm.hf`."""
    if tm.how in ("copy", "vocab"):
        return [t]
    if tm.how == "gate_up":
        gate, up = torch.chunk(t, 2, dim=0)
        return [gate.contiguous(), up.contiguous()]
    if tm.how == "qkv":
        g, rest = arch.num_query_groups, t.shape[1:]
        q, k, v = torch.split(t.reshape(g, -1, *rest), _qkv_split_sizes(arch), dim=1)
        return [x.reshape(-1, *rest).contiguous() for x in (q, k, v)]
    raise ValueError(f"unknown transform {tm.how!r}")


def check_shapes(tm: TensorMap, hf: list[torch.Tensor], arch: ModelArch, where: str) -> None:
    """Catch a config that does not match its weights before anything is written."""
    h, d = arch.hidden_size, arch.head_dim
    expected: dict[str, tuple] = {}
    if tm.how == "qkv":
        bias = tm.mcore.endswith("bias")
        for name, rows in zip(tm.hf, (arch.num_attention_heads * d, arch.num_query_groups * d, arch.num_query_groups * d)):
            expected[name] = (rows,) if bias else (rows, h)
    elif tm.how == "gate_up":
        for name in tm.hf:
            expected[name] = (arch.ffn_hidden_size, h)
    for name, t in zip(tm.hf, hf):
        if name in expected and tuple(t.shape) != expected[name]:
            raise ValueError(f"{where}: tensor {name} has shape {tuple(t.shape)}, config.json implies {expected[name]}")
