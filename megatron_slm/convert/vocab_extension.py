"""Where the speech tokens go in the embedding and how their rows start.

Layout (SlamKit / SIMS, see `megatron_slm.vocab`): with V = the base tokenizer's length,
rows [0, V) are the text tokens, V..V+K-1 the units, V+K `<speech>`, V+K+1 `<text>`, then
zero padding up to the Megatron multiple (make_vocab_size_divisible_by x TP).

The ids are the tokenizer's, not the embedding's: Qwen2.5's embedding has 151936 rows for a
151665-token tokenizer, so the new tokens take ids 151665.. and overwrite those never-used
rows (re-initialised like every new row), and the matrix grows to V+K+2 rows. A model whose
tokenizer already holds the units (a released SIMS checkpoint) is copied row for row.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

InitMethod = Literal["mean", "normal", "zero"]
INIT_METHODS = ("mean", "normal", "zero")


@dataclass(frozen=True)
class VocabPlan:
    text_vocab_size: int  # V: rows whose statistics initialise the new ones
    copy_rows: int  # rows taken from the HF matrix unchanged (V, or V+K+2 when already extended)
    vocab_size: int  # V + K + 2
    padded_vocab_size: int
    init: InitMethod = "mean"
    seed: int = 1234

    @property
    def new_rows(self) -> int:
        return self.vocab_size - self.copy_rows


def empty_matrix(plan: VocabPlan, hidden: int, dtype: torch.dtype) -> torch.Tensor:
    """The Megatron [padded_vocab, h] matrix, zeros (padding rows stay zero)."""
    return torch.zeros(plan.padded_vocab_size, hidden, dtype=dtype)


def _row_stats(rows: torch.Tensor, block: int = 4096) -> tuple[torch.Tensor, float]:
    """Per-column mean and overall std of `rows`, in float64 blocks (no full fp32 copy of a
    128k x h embedding)."""
    total = torch.zeros(rows.shape[1], dtype=torch.float64)
    sq = 0.0
    for i in range(0, rows.shape[0], block):
        chunk = rows[i:i + block].double()
        total += chunk.sum(dim=0)
        sq += float((chunk * chunk).sum())
    n = rows.shape[0]
    mean = total / n
    var = sq / (n * rows.shape[1]) - float(mean.mean()) ** 2
    return mean, max(var, 0.0) ** 0.5


def init_new_rows(out: torch.Tensor, plan: VocabPlan) -> None:
    """Fill rows [copy_rows, vocab_size) of `out` (whose first rows hold the text tokens)."""
    if not plan.new_rows:
        return
    h = out.shape[1]
    if plan.init == "zero":
        out[plan.copy_rows: plan.vocab_size] = 0
        return
    mean, std = _row_stats(out[: plan.text_vocab_size])
    if plan.init == "mean":
        new = mean.float().unsqueeze(0).expand(plan.new_rows, h)
    else:
        gen = torch.Generator().manual_seed(plan.seed)
        new = torch.randn(plan.new_rows, h, generator=gen) * std
    out[plan.copy_rows: plan.vocab_size] = new.to(out.dtype)


def extend_rows(hf: torch.Tensor, plan: VocabPlan, dtype: torch.dtype) -> torch.Tensor:
    """HF embedding/lm_head [rows, h] -> Megatron [padded_vocab, h] in `dtype`."""
    if hf.shape[0] < plan.copy_rows:
        raise ValueError(f"the matrix has {hf.shape[0]} rows but the tokenizer needs {plan.copy_rows}")
    out = empty_matrix(plan, hf.shape[1], dtype)
    out[: plan.copy_rows] = hf[: plan.copy_rows]
    init_new_rows(out, plan)
    return out


def trim_rows(mcore: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Megatron's padded matrix -> the HF one (padding rows dropped)."""
    return mcore[:vocab_size]
