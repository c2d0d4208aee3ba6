"""From datasets to microbatches: the synthetic source, the resumable sampler, collation.

The sampler follows Megatron's convention: the global sample stream is cut into steps of
`global_batch_size`; each step into microbatches of `micro_batch_size * dp` consecutive
samples, of which DP rank r takes the r-th slice. So changing DP at a fixed global batch
changes who computes what, never which samples form a step -- that is what makes layouts
comparable and resumption exact (restart at `consumed_samples`).
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

TEXT, SPEECH, OTHER = 0, 1, 2


class SyntheticDataset:
    """Deterministic learnable token streams for smoke runs: each sample is an arithmetic
    progression modulo the vocabulary with a per-sample start and stride, so a model can
    drive the loss down quickly; sample i is the same on every rank and every run."""

    def __init__(self, vocab_size: int, seq_length: int, seed: int, num_samples: int = 2**31 - 1,
                 max_stride: int = 4):
        self.vocab_size, self.seq_length, self.seed = vocab_size, seq_length, seed
        self.num_samples, self.max_stride = num_samples, max_stride

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, idx: int) -> dict:
        rng = np.random.default_rng((self.seed, int(idx)))
        start = rng.integers(0, self.vocab_size)
        stride = rng.integers(1, self.max_stride + 1)
        seq = (start + stride * np.arange(self.seq_length + 1)) % self.vocab_size
        return {
            "tokens": seq[:-1].astype(np.int64),
            "labels": seq[1:].astype(np.int64),
            "loss_mask": np.ones(self.seq_length, dtype=np.float32),
            "modality": np.full(self.seq_length, TEXT, dtype=np.int64),
        }


class StepSampler:
    """Yields, for each step from `consumed_samples` on, this DP rank's microbatch index lists."""

    def __init__(self, total_samples: int, consumed_samples: int, micro_batch_size: int,
                 global_batch_size: int, dp_rank: int, dp_size: int):
        self.total, self.consumed = total_samples, consumed_samples
        self.mbs, self.gbs, self.dp_rank, self.dp_size = micro_batch_size, global_batch_size, dp_rank, dp_size

    def __iter__(self) -> Iterator[list[int]]:
        step_start = self.consumed
        chunk = self.mbs * self.dp_size
        while step_start + self.gbs <= self.total:
            for mb_start in range(step_start, step_start + self.gbs, chunk):
                first = mb_start + self.dp_rank * self.mbs
                yield list(range(first, first + self.mbs))
            step_start += self.gbs


def collate(items: list[dict]) -> dict:
    out = {k: torch.from_numpy(np.stack([it[k] for it in items])) for k in items[0]}
    return out


def make_loader(dataset, sampler: StepSampler, num_workers: int, collate_fn=collate) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, collate_fn=collate_fn, num_workers=num_workers,
        persistent_workers=num_workers > 0, prefetch_factor=4 if num_workers > 0 else None)


_CAUSAL_CACHE: dict = {}


def causal_mask(seq_length: int) -> torch.Tensor:
    """[1, 1, s, s] bool, True = masked (Megatron convention); cached per length."""
    if seq_length not in _CAUSAL_CACHE:
        _CAUSAL_CACHE[seq_length] = torch.triu(torch.ones(seq_length, seq_length, dtype=torch.bool), 1)[None, None]
    return _CAUSAL_CACHE[seq_length]


def to_model_inputs(batch: dict, device: torch.device, need_mask: bool) -> dict:
    """Move a collated microbatch to the device and add what GPTModel.forward needs."""
    tokens = batch["tokens"]
    b, s = tokens.shape
    out = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    if "position_ids" not in out:
        out["position_ids"] = torch.arange(s, device=device).unsqueeze(0).expand(b, s)
    if "attention_mask" in out:  # dataset-provided document mask, [b, 1, s, s]
        mask = out["attention_mask"]
        out["attention_mask"] = mask if mask.dim() == 4 else mask.unsqueeze(1)
    elif need_mask:
        out["attention_mask"] = causal_mask(s).to(device)
    else:
        out["attention_mask"] = None  # TE / flash attention applies the causal mask itself
    return out

