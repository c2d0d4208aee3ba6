"""Pair datasets on disk: what `tools/preprocess_data.py preference|sft` writes and training reads.

    <prefix>.bin / .idx           one sequence per record: prompt ++ chosen ++ rejected (preference)
                                  or prompt ++ response (sft), token ids as in pre-training data
    <prefix>_roles.bin / .idx     uint8 per token: 0 prompt, 1 chosen / response, 2 rejected --
                                  the loss mask and the pair structure in one
    <prefix>.meta.json            the dataset sidecar (kind "preference" or "sft", identity, counts,
                                  max_length / max_prompt_length it was truncated to)
"""
from __future__ import annotations

import os
from typing import Optional

import numpy as np

from megatron_slm.data.storage import DatasetError, check_stored, token_dtype

ROLES_SUFFIX = "_roles"
PROMPT, CHOSEN, REJECTED = 0, 1, 2
RESPONSE = CHOSEN
PAIR_KINDS = ("preference", "sft")


class PairWriter:
    """Streams records into <prefix>.bin/.idx and <prefix>_roles.bin/.idx (idx written last)."""

    def __init__(self, prefix: str, vocab_size: int) -> None:
        from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

        os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
        self.prefix = prefix
        self.ids = IndexedDatasetBuilder(prefix + ".bin", dtype=token_dtype(vocab_size))
        self.roles = IndexedDatasetBuilder(prefix + ROLES_SUFFIX + ".bin", dtype=np.uint8)

    def add(self, prompt: np.ndarray, completions: list[np.ndarray]) -> None:
        import torch

        ids = np.concatenate([prompt, *completions])
        roles = np.concatenate([np.full(len(prompt), PROMPT)] +
                               [np.full(len(c), role) for c, role in zip(completions, (CHOSEN, REJECTED))])
        self.ids.add_item(torch.from_numpy(ids.astype(np.int64)))
        self.ids.end_document()
        self.roles.add_item(torch.from_numpy(roles.astype(np.int64)))
        self.roles.end_document()

    def finalize(self) -> None:
        self.roles.finalize(self.prefix + ROLES_SUFFIX + ".idx")
        self.ids.finalize(self.prefix + ".idx")


class PairStore:
    """A stored pair dataset opened for reading: `parts(i)` -> (prompt, [completions])."""

    def __init__(self, prefix: str, vocab, expected_kind: Optional[str] = None) -> None:
        from megatron.core.datasets.indexed_dataset import IndexedDataset

        self.meta, self.kind = check_stored(prefix, vocab, "gpt")
        if self.kind not in PAIR_KINDS:
            raise DatasetError(f"{prefix} holds {self.kind!r} documents, not preference pairs or SFT examples")
        if expected_kind is not None and self.kind != expected_kind:
            raise DatasetError(f"{prefix} holds {self.kind} data but {expected_kind} data is needed here")
        for suffix in (".bin", ".idx"):
            if not os.path.isfile(prefix + ROLES_SUFFIX + suffix):
                raise DatasetError(f"{prefix}{ROLES_SUFFIX}{suffix} does not exist (rerun tools/preprocess_data.py "
                                   f"{self.kind})")
        self.prefix = prefix
        self.ids = IndexedDataset(prefix)
        self.roles = IndexedDataset(prefix + ROLES_SUFFIX)
        if len(self.ids) != len(self.roles):
            raise DatasetError(f"{prefix}: {len(self.ids)} records but {len(self.roles)} role rows")

    def __len__(self) -> int:
        return len(self.ids)

    def parts(self, i: int) -> tuple[np.ndarray, list[np.ndarray]]:
        ids, roles = self.ids[i].astype(np.int64), self.roles[i]
        completions = [ids[roles == r] for r in ((CHOSEN, REJECTED) if self.kind == "preference" else (RESPONSE,))]
        return ids[roles == PROMPT], completions
