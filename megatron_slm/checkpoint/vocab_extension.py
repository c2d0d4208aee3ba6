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


def extend_rows(hf: torch.Tensor, plan: VocabPlan, dtype: torch.dtype) -> torch.Tensor:
    """HF embedding/lm_head [rows, h] -> Megatron [padded_vocab, h] in `dtype`."""
    if hf.shape[0] < plan.copy_rows:
        raise ValueError(f"the matrix has {hf.shape[0]} rows but the tokenizer needs {plan.copy_rows}")
    out = torch.zeros(plan.padded_vocab_size, hf.shape[1], dtype=dtype)
    out[: plan.copy_rows] = hf[: plan.copy_rows]
    if plan.new_rows:
        old = hf[: plan.text_vocab_size].float()
        if plan.init == "mean":
            new = old.mean(dim=0, keepdim=True).expand(plan.new_rows, -1)
        elif plan.init == "normal":
            gen = torch.Generator().manual_seed(plan.seed)
            new = torch.randn(plan.new_rows, hf.shape[1], generator=gen) * old.std()
        else:
            new = torch.zeros(plan.new_rows, hf.shape[1])
        out[plan.copy_rows: plan.vocab_size] = new.to(dtype)
    return out


def trim_rows(mcore: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Megatron's padded matrix -> the HF one (padding rows dropped)."""
    return mcore[:vocab_size]
