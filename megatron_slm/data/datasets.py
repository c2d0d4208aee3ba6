"""The training dataset: one Megatron `GPTDataset` subclass for text-only, speech-only and
interleaved data (each prefix's sidecar says what it holds); blend.py builds the blend.

    ds = SLMDataset(stored, path, indices, num_samples, Split.train, SLMDatasetConfig(...))
    ds[i] -> {"tokens", "labels", "loss_mask", "modality", "position_ids", ["attention_mask"]}

 Documents are packed into `seq_length` with EOD between them exactly
as GPTDataset does. Dynamic interleaved datasets store each utterance's words and units once and
draw a fresh interleaving per (train.seed, epoch, utterance) when a sample is read; the sample
index is built from the drawn lengths, so packing stays exact. With the same seed, the epoch-0
documents equal those of a static dataset preprocessed with that seed.
"""
from __future__ import annotations

import dataclasses
import json
import os
import warnings
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig
from megatron.core.datasets.utils import Split

from megatron_slm import document
from megatron_slm.config import InterleaveConfig
from megatron_slm.data import dynamic_index, interleave
from megatron_slm.data.samples import NO_PAD, make_sample
from megatron_slm.data.storage import DatasetError, StoredDataset
from megatron_slm.vocab import SpeechVocab

__all__ = ["DatasetError", "SLMDataset", "SLMDatasetConfig"]


@dataclass
class SLMDatasetConfig(GPTDatasetConfig):
    mode: str = "static"
    interleave: InterleaveConfig = field(default_factory=InterleaveConfig)
    loss_on: str = "all"
    attention_across_documents: bool = True
    kinds: dict = field(default_factory=dict)  # prefix -> expected kind from the blend ("gpt": any)
    interleave_key: str = field(init=False, default="")

    def __post_init__(self) -> None:
        super().__post_init__()
        # hashed into the index cache names; only dynamic draws change the indices
        self.interleave_key = json.dumps({"mode": self.mode, **dataclasses.asdict(self.interleave)}, sort_keys=True)


class SLMDataset(GPTDataset):
    """GPTDataset over our stored datasets, returning modality-aware training samples."""

    def __init__(self, indexed_dataset: StoredDataset, dataset_path: Optional[str], indexed_indices: np.ndarray,
                 num_samples: Optional[int], index_split: Split, config: SLMDatasetConfig) -> None:
        self.vocab: SpeechVocab = config.tokenizer
        self._markers = document.Markers.of(self.vocab, bos=(indexed_dataset.meta or {}).get("add_bos", True))
        self._drawer = dynamic_index.Drawer(indexed_dataset, config.interleave, config.random_seed, self._markers)
        with warnings.catch_warnings():  # pad == eod for Llama-style tokenizers: handled in samples.py
            warnings.filterwarnings("ignore", message=".*pad token id.*")
            super().__init__(indexed_dataset, dataset_path, indexed_indices, num_samples, index_split, config)
        self._pad_token_id = self.vocab.pad if self.vocab.has_pad else NO_PAD
        if len(self) == 0 and num_samples:
            raise DatasetError(f"{dataset_path}: the {index_split.name} split has no documents "
                               f"(split {config.split!r} of {len(indexed_dataset)} documents); change data.split")

    @staticmethod
    def numel_low_level_dataset(low_level_dataset: StoredDataset) -> int:
        return len(low_level_dataset)

    @staticmethod
    def build_low_level_dataset(dataset_path: str, config: SLMDatasetConfig) -> StoredDataset:
        stored = StoredDataset(dataset_path, config.tokenizer, config.kinds.get(dataset_path, "gpt"),
                               mmap=config.mmap_bin_files)
        if config.mode == "dynamic" and stored.kind == "interleaved" and not stored.dynamic:
            raise DatasetError(f"data.mode=dynamic but {dataset_path} was preprocessed in static mode "
                               f"(re-run tools/preprocess_data.py interleaved --mode dynamic)")
        return stored

    @staticmethod
    def _key_config_attributes() -> list[str]:
        return GPTDataset._key_config_attributes() + ["interleave_key"]

    # ------------------------------------------------------------------ indices

    @property
    def _drawn(self) -> bool:
        """Documents are drawn at read time (dynamic storage)."""
        return self.dataset.dynamic

    def _epoch_of(self, epoch: int) -> int:
        # data.mode=static over dynamic storage: every epoch sees the epoch-0 draw
        return epoch if self.config.mode == "dynamic" else 0

    def _build_document_sample_shuffle_indices(self):
        if len(self.indices) == 0:  # an empty split (tiny corpora): no samples instead of an endless epoch loop
            return (np.zeros(0, np.int32), np.zeros((1, 2), np.int32), np.zeros(0, np.uint32))
        if not self._drawn:
            return super()._build_document_sample_shuffle_indices()
        import torch

        cfg = self.config
        indices, runs = dynamic_index.build_indices(
            self._drawer, self.indices, self.num_samples, cfg.sequence_length, cfg.add_extra_token_to_sequence,
            dynamic=cfg.mode == "dynamic",
            drop_last=self.index_split != Split.valid or cfg.drop_last_partial_validation_sequence,
            cache_dir=cfg.path_to_cache or os.path.join(self.dataset.path_prefix, "cache", "SLMDataset_indices"),
            cache_base=f"{self.unique_description_hash}-{type(self).__name__}-{self.index_split.name}",
            write_cache=not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0)
        self._runs = dynamic_index.RunTable(*runs, self.dataset, self._markers)
        return indices

    def _get_num_tokens_per_epoch(self) -> int:
        if self._drawn:  # used by __len__ only with defer_npy_index_mmap, which we do not set
            return int(self._drawer.draw_epoch(self.indices, 0)[0][self.indices].sum())
        return super()._get_num_tokens_per_epoch()

    # ------------------------------------------------------------------ samples

    def document(self, doc: int, epoch: int = 0) -> np.ndarray:
        """The token ids of document `doc` as seen in `epoch` (dynamic: drawn now)."""
        if not self._drawn:
            return self.dataset.get(doc).astype(np.int64)
        batch = self.dataset.prepared_batch(np.array([doc]))
        runs = interleave.draw_batch(batch, self.config.interleave, self.config.random_seed, self._epoch_of(epoch))
        return interleave.assemble_batch(batch, runs, self._markers)[0]

    def _query_document_sample_shuffle_indices(self, idx: int):
        if not self._drawn:
            return super()._query_document_sample_shuffle_indices(idx)
        idx = self.shuffle_index[idx]
        (beg, beg_off), (end, end_off) = self.sample_index[idx], self.sample_index[idx + 1]
        virtual = np.asarray(self.document_index[int(beg):int(end) + 1], dtype=np.int64)
        text, offsets = self._runs.assemble(virtual)
        extra = int(self.config.add_extra_token_to_sequence)
        stop = int(offsets[-2]) + int(end_off) + extra  # the last document is cut after end_off (+ the extra token)
        text = text[int(beg_off):stop]
        want = self.config.sequence_length + extra
        if len(text) < want:
            text = np.concatenate([text, np.full(want - len(text), self._pad_token_id, dtype=np.int64)])
        return text, virtual % len(self.dataset)

    def __getitem__(self, idx: Optional[int]) -> dict[str, np.ndarray]:
        text, _ = self._query_document_sample_shuffle_indices(0 if idx is None else idx)
        return make_sample(text, self.vocab, self._pad_token_id, self.config.loss_on,
                           self.config.attention_across_documents, padding_sample=idx is None)
