"""The blend of a run: `data.*` config -> Megatron's BlendedMegatronDatasetBuilder over SLMDatasets.

    splits = build_datasets(cfg, vocab, train_samples, valid_samples, test_samples)
    splits.train[i] -> a training sample plus "dataset_id"; splits.valid_per_dataset[name] -> each
    blended dataset's own validation split (per-dataset validation losses)
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
from megatron.core.datasets.utils import Split

from megatron_slm.config import ConfigError, SLMConfig
from megatron_slm.data import spans, storage
from megatron_slm.data.datasets import SLMDataset, SLMDatasetConfig
from megatron_slm.vocab import SpeechVocab


@dataclass
class DatasetSplits:
    train: Any
    valid: Any
    valid_per_dataset: dict[str, Any]
    test: Any


def dataset_config(cfg: SLMConfig, vocab: SpeechVocab) -> SLMDatasetConfig:
    data = cfg.data
    if not data.blend:
        raise ConfigError("data.blend is empty: list the datasets (path, weight, kind) for data.source=blend")
    prefixes = [e.path[:-4] if e.path.endswith((".bin", ".idx")) else e.path for e in data.blend]
    weights = [float(e.weight) for e in data.blend]
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ConfigError(f"data.blend weights must be >= 0 with a positive sum, got {weights}")
    try:
        spans.check_config(data.interleave, prefix="data.interleave")
    except ValueError as e:
        raise ConfigError(str(e)) from None
    check_conventions(prefixes, data.interleave)
    return SLMDatasetConfig(
        random_seed=cfg.train.seed, sequence_length=cfg.train.seq_length, blend=(prefixes, weights),
        split=data.split, path_to_cache=data.cache_dir, tokenizer=vocab,
        reset_position_ids=False, reset_attention_mask=False, eod_mask_loss=False, create_attention_mask=False,
        mode=data.mode, interleave=data.interleave, loss_on=data.loss_on,
        attention_across_documents=data.attention_across_documents,
        kinds={p: e.kind for p, e in zip(prefixes, data.blend)},
    )


def check_conventions(prefixes: list[str], icfg) -> None:
    """`storage.check_conventions` as a ConfigError."""
    try:
        storage.check_conventions(prefixes, icfg)
    except storage.DatasetError as e:
        raise ConfigError(str(e)) from None


def build_datasets(cfg: SLMConfig, vocab: SpeechVocab, train_samples: int, valid_samples: int,
                   test_samples: int) -> DatasetSplits:
    """Build the blended train/valid/test datasets on every rank (call after process groups exist)."""
    config = dataset_config(cfg, vocab)
    sizes = [int(train_samples), int(valid_samples), int(test_samples)]  # ints: None breaks weighted blends
    train, valid, test = BlendedMegatronDatasetBuilder(SLMDataset, sizes, lambda: True, config).build()
    per_dataset = {}
    if valid_samples > 0:
        # each dataset's own validation split at the full validation size (the blend's share
        # of a small validation set would be too few samples to give a loss)
        names = [e.name or os.path.basename(p) for e, p in zip(cfg.data.blend, config.blend[0])]
        beg_f, end_f = config.split_matrix[Split.valid.value] or (0.0, 0.0)
        for name, prefix in zip(names, config.blend[0]):
            low = SLMDataset.build_low_level_dataset(prefix, config)
            n = SLMDataset.numel_low_level_dataset(low)
            indices = np.arange(int(round(beg_f * n)), int(round(end_f * n)), dtype=np.int32)
            if len(indices):
                per_dataset[name] = BlendedMegatronDatasetBuilder.build_generic_dataset(
                    SLMDataset, lambda: True, True, low, prefix, indices, int(valid_samples), Split.valid, config)
    return DatasetSplits(train=train, valid=valid, valid_per_dataset=per_dataset, test=test)
