"""Training datasets: text-only, speech-only and interleaved indexed datasets, blended.

    splits = build_datasets(cfg, vocab, train_samples, valid_samples, test_samples)
    splits.train[i] -> {"tokens", "labels", "loss_mask", "modality", "position_ids",
                        ["attention_mask"], "dataset_id"}

One dataset class (`SLMDataset`, a Megatron `GPTDataset`) serves every kind: each prefix's
sidecar says what it holds. Documents are packed into `seq_length` with EOD between them exactly
as GPTDataset does. Dynamic interleaved datasets store each utterance's words and units once and
draw a fresh interleaving per (train.seed, epoch, utterance) when a sample is read; the sample
index is built from the drawn lengths, so packing stays exact. With the same seed, the epoch-0
documents equal those of a static dataset preprocessed with that seed.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig, _build_shuffle_index
from megatron.core.datasets.indexed_dataset import IndexedDataset
from megatron.core.datasets.utils import Split

from megatron_slm.config import ConfigError, InterleaveConfig, SLMConfig
from megatron_slm.data import interleave as il
from megatron_slm.data.preprocess import WORDS_SUFFIX, read_sidecar
from megatron_slm.vocab import MODALITY_SPEECH, MODALITY_TEXT, SpeechVocab

logger = logging.getLogger(__name__)

NO_PAD = -1  # Megatron's "no pad token" sentinel: never a real id


# dynamic index building: documents per forked drawing process, and at most this many processes
DRAW_CHUNK = 20000
DRAW_WORKERS = 16
_DRAWING: Optional["SLMDataset"] = None  # the dataset being drawn, inherited by forked workers


def _draw_chunk(args: tuple[np.ndarray, int]) -> tuple[np.ndarray, ...]:
    docs, epoch = args
    return _DRAWING._draw_docs(docs, epoch)


class DatasetError(ValueError):
    """A dataset in the blend cannot be used with this run (missing, wrong kind, other vocabulary)."""


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


class LowLevel:
    """An indexed dataset plus what its sidecar says (and, for dynamic data, the words index)."""

    def __init__(self, prefix: str, config: SLMDatasetConfig) -> None:
        vocab: SpeechVocab = config.tokenizer
        for suffix in (".bin", ".idx"):
            if not os.path.isfile(prefix + suffix):
                raise DatasetError(f"data.blend: {prefix}{suffix} does not exist (an unfinished preprocessing run has no .idx)")
        expected = config.kinds.get(prefix, "gpt")
        try:
            self.meta: Optional[dict] = read_sidecar(prefix)
        except FileNotFoundError:
            if expected != "gpt":
                raise DatasetError(f"data.blend: {prefix}.meta.json missing; a kind={expected!r} dataset needs the "
                                   f"sidecar written by tools/preprocess_data.py (use kind: gpt for plain Megatron data)") from None
            self.meta = None
        self.kind = self.meta["kind"] if self.meta else "text"
        if expected not in ("gpt", self.kind):
            raise DatasetError(f"data.blend: {prefix} holds {self.kind!r} documents but the blend says kind={expected!r}")
        if self.meta:
            self._check_vocab(prefix, vocab)
        self.dynamic = bool(self.meta and self.meta.get("mode") == "dynamic")
        if config.mode == "dynamic" and self.kind == "interleaved" and not self.dynamic:
            raise DatasetError(f"data.mode=dynamic but {prefix} was preprocessed in static mode "
                               f"(re-run tools/preprocess_data.py interleaved --mode dynamic)")
        self.indexed = IndexedDataset(prefix, mmap=config.mmap_bin_files)
        self.words = IndexedDataset(prefix + WORDS_SUFFIX, mmap=config.mmap_bin_files) if self.dynamic else None
        self.path_prefix = prefix

    def _check_vocab(self, prefix: str, vocab: SpeechVocab) -> None:
        theirs, mine = self.meta["identity"]["vocab"], vocab.identity()
        keys = ["text_vocab_sha256", "text_vocab_size"] + (["num_units"] if self.kind != "text" else [])
        diff = [k for k in keys if theirs.get(k) != mine[k]]
        if diff:
            raise DatasetError(f"{prefix}.meta.json: made with a different vocabulary than this run's tokenizer ("
                               + ", ".join(f"{k} {theirs.get(k)!r} there vs {mine[k]!r} here" for k in diff) + ")")

    @property
    def sequence_lengths(self) -> np.ndarray:
        return self.indexed.sequence_lengths

    def get(self, idx: int, offset: int = 0, length: Optional[int] = None) -> np.ndarray:
        return self.indexed.get(idx, offset=offset, length=length)

    def __len__(self) -> int:
        return len(self.indexed)

    def _flat(self, which: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(all stored ids of the .bin as one array, per-document starts, lengths): documents are
        written back to back, so a batch of them is gathered with array operations."""
        cached = self.__dict__.setdefault("_flat_cache", {})
        if which not in cached:
            ds, prefix = (self.indexed, self.path_prefix) if which == "layout" else (self.words, self.path_prefix + WORDS_SUFFIX)
            lengths = np.asarray(ds.sequence_lengths, dtype=np.int64)
            cached[which] = (np.memmap(prefix + ".bin", dtype=ds.index.dtype, mode="r"),
                             np.cumsum(lengths) - lengths, lengths)
        return cached[which]

    def prepared_batch(self, docs: np.ndarray) -> il.PreparedBatch:
        """The stored words/units of dynamic documents `docs`, as one batch."""
        docs = np.asarray(docs, dtype=np.int64)
        flat, starts, lengths = self._flat("layout")
        layout = il.gather_ranges(flat, starts[docs], lengths[docs])
        wflat, wstarts, _ = self._flat("words")
        w0 = wstarts[docs]
        keys, n = wflat[w0].astype(np.int64), wflat[w0 + 1].astype(np.int64)
        return il.PreparedBatch.from_flat(keys, n, il.gather_ranges(wflat, w0 + 2, n), il.gather_ranges(wflat, w0 + 2 + n, n),
                                          il.gather_ranges(wflat, w0 + 2 + 2 * n, n), layout, lengths[docs])


class SLMDataset(GPTDataset):
    """GPTDataset over our indexed datasets, returning modality-aware training samples."""

    def __init__(self, indexed_dataset: LowLevel, dataset_path: Optional[str], indexed_indices: np.ndarray,
                 num_samples: Optional[int], index_split: Split, config: SLMDatasetConfig) -> None:
        self.vocab: SpeechVocab = config.tokenizer
        self._markers = il.Markers(self.vocab.speech_id, self.vocab.text_id,
                                   self.vocab.bos if (indexed_dataset.meta or {}).get("add_bos", True) else None,
                                   self.vocab.eod)
        with warnings.catch_warnings():  # pad == eod for Llama-style tokenizers: handled below
            warnings.filterwarnings("ignore", message=".*pad token id.*")
            super().__init__(indexed_dataset, dataset_path, indexed_indices, num_samples, index_split, config)
        self._pad_token_id = self.vocab.pad if self.vocab.has_pad else NO_PAD
        if len(self) == 0 and num_samples:
            raise DatasetError(f"{dataset_path}: the {index_split.name} split has no documents "
                               f"(split {config.split!r} of {len(indexed_dataset)} documents); change data.split")

    @staticmethod
    def numel_low_level_dataset(low_level_dataset: LowLevel) -> int:
        return len(low_level_dataset)

    @staticmethod
    def build_low_level_dataset(dataset_path: str, config: SLMDatasetConfig) -> LowLevel:
        return LowLevel(dataset_path, config)

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

    def _draw_epoch(self, epoch: int) -> tuple[np.ndarray, list[np.ndarray]]:
        """Draw every document of this split for `epoch`: (lengths indexed by document,
        [run counts per document, run source starts, run lengths, run is-speech]). A run's
        source is its offset in the document's stored layout (text ids ++ unit ids). Large
        splits are drawn by forked processes in document chunks (the result is the same)."""
        N = len(self.dataset)
        docs = self.indices.astype(np.int64)
        workers = min(DRAW_WORKERS, len(os.sched_getaffinity(0)), -(-len(docs) // DRAW_CHUNK))
        chunks = np.array_split(docs, max(workers * 4, -(-len(docs) // DRAW_CHUNK), 1))
        if workers > 1:
            global _DRAWING
            _DRAWING = self
            import multiprocessing

            with multiprocessing.get_context("fork").Pool(workers) as pool:
                parts = pool.map(_draw_chunk, [(c, epoch) for c in chunks])
            _DRAWING = None
        else:
            parts = [self._draw_docs(c, epoch) for c in chunks]
        lengths, counts = np.zeros(N, dtype=np.int32), np.zeros(N, dtype=np.int32)
        lengths[docs] = np.concatenate([p[0] for p in parts])
        counts[docs] = np.concatenate([p[1] for p in parts])
        return lengths, [counts] + [np.concatenate([p[i] for p in parts]) for i in (2, 3, 4)]

    def _draw_docs(self, docs: np.ndarray, epoch: int) -> tuple[np.ndarray, ...]:
        """(lengths, run counts, run sources, run lengths, run is-speech) of `docs` in `epoch`,
        drawn in one vectorised batch."""
        batch = self.dataset.prepared_batch(docs)
        runs = il.draw_batch(batch, self.config.interleave, self.config.random_seed, self._epoch_of(epoch))
        counts = np.diff(runs.offsets)
        run_doc = np.repeat(np.arange(len(docs)), counts)
        lengths = (int(self._markers.bos is not None) + 1 + counts
                   + np.bincount(run_doc, weights=runs.length, minlength=len(docs)).astype(np.int64))
        src = runs.src - batch.layout_starts[run_doc]  # offsets into each document's stored layout
        return (lengths.astype(np.int32), counts.astype(np.int32), src.astype(np.int32),
                runs.length.astype(np.int32), runs.speech.astype(bool))

    def _build_document_sample_shuffle_indices(self):
        if len(self.indices) == 0:  # an empty split (tiny corpora): no samples instead of an endless epoch loop
            return (np.zeros(0, np.int32), np.zeros((1, 2), np.int32), np.zeros(0, np.uint32))
        if not self._drawn:
            return super()._build_document_sample_shuffle_indices()
        return self._dynamic_indices()

    def _dynamic_indices(self):
        """GPTDataset's indices over virtual documents `epoch * N + doc`, whose lengths are those
        of that epoch's draw. The shuffles use the same RandomState sequence as GPTDataset, so at
        epoch 0 the samples equal those of the static dataset. The draws are kept as a run table
        (a few int32 per document and epoch) from which samples are assembled with array ops."""
        import torch
        from megatron.core.datasets import helpers

        base = f"{self.unique_description_hash}-{type(self).__name__}-{self.index_split.name}"
        cache = self.config.path_to_cache or os.path.join(self.dataset.path_prefix, "cache", "SLMDataset_indices")
        names = ("document_index", "sample_index", "shuffle_index", "run_offsets", "run_src", "run_len", "run_speech")
        paths = {k: os.path.join(cache, f"{base}-{k}.npy") for k in names}
        if all(os.path.isfile(p) for p in paths.values()):
            loaded = {k: np.load(paths[k], mmap_mode="r") for k in names}
            self._runs = tuple(loaded[k] for k in names[3:])
            return tuple(loaded[k] for k in names[:3])
        t0 = time.time()
        N, seq = len(self.dataset), self.config.sequence_length
        extra = int(self.config.add_extra_token_to_sequence)
        wanted = (self.num_samples or 0) * seq + extra
        epochs = [self._draw_epoch(0)]
        per_epoch = [int(epochs[0][0][self.indices].sum())]
        while self.num_samples is not None and sum(per_epoch) < wanted:
            epochs.append(self._draw_epoch(len(epochs)) if self.config.mode == "dynamic" else epochs[0])
            per_epoch.append(int(epochs[-1][0][self.indices].sum()))
        num_epochs, total = len(epochs), sum(per_epoch)
        if num_epochs * N >= np.iinfo(np.int32).max:
            raise DatasetError(f"{self.dataset.path_prefix}: {num_epochs} epochs x {N} documents overflow the int32 document index")
        sizes = np.concatenate([e[0] for e in epochs]).astype(np.int32)
        run_offsets = np.concatenate(([0], np.cumsum(np.concatenate([e[1][0] for e in epochs]), dtype=np.int64)))
        run_src, run_len, run_speech = (np.concatenate([e[1][i] for e in epochs]) for i in (1, 2, 3))
        separate_final_epoch = False
        if num_epochs > 1:
            before_final = (total - per_epoch[-1] - extra) // seq
            per_epoch_samples = (per_epoch[-1] - extra) // seq
            separate_final_epoch = (self.num_samples - before_final) < int(0.80 * per_epoch_samples)
        rs = np.random.RandomState(self.config.random_seed)
        virtual = lambda epochs: np.concatenate([self.indices + e * N for e in epochs]).astype(np.int32)
        if separate_final_epoch:
            first = virtual(range(num_epochs - 1))
            rs.shuffle(first)
            last = virtual([num_epochs - 1])
            rs.shuffle(last)
            document_index = np.concatenate([first, last])
        else:
            document_index = virtual(range(num_epochs))
            rs.shuffle(document_index)
        drop_last = self.index_split != Split.valid or self.config.drop_last_partial_validation_sequence
        sample_index = helpers.build_sample_idx(sizes, document_index, seq, 1, total, drop_last, bool(extra))
        n = sample_index.shape[0] - 1
        shuffle_index = (_build_shuffle_index(before_final, n, rs) if separate_final_epoch
                         else _build_shuffle_index(n, n, rs))
        arrays = dict(zip(names, (document_index, sample_index, shuffle_index, run_offsets, run_src, run_len, run_speech)))
        if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:
            os.makedirs(cache, exist_ok=True)
            for k in names[::-1]:  # document_index last: it marks the cache complete
                tmp = paths[k][:-4] + ".tmp.npy"
                np.save(tmp, arrays[k])
                os.replace(tmp, paths[k])
        logger.info("built dynamic indices for %s (%s): %d epochs, %d samples in %.2fs",
                    self.dataset.path_prefix, self.index_split.name, num_epochs, n, time.time() - t0)
        self._runs = (run_offsets, run_src, run_len, run_speech)
        return document_index, sample_index, shuffle_index

    def _get_num_tokens_per_epoch(self) -> int:
        if self._drawn:  # used by __len__ only with defer_npy_index_mmap, which we do not set
            return int(self._draw_epoch(0)[0][self.indices].sum())
        return super()._get_num_tokens_per_epoch()

    # ------------------------------------------------------------------ samples

    def document(self, doc: int, epoch: int = 0) -> np.ndarray:
        """The token ids of document `doc` as seen in `epoch` (dynamic: drawn now)."""
        if not self._drawn:
            return self.dataset.get(doc).astype(np.int64)
        batch = self.dataset.prepared_batch(np.array([doc]))
        runs = il.draw_batch(batch, self.config.interleave, self.config.random_seed, self._epoch_of(epoch))
        return il.assemble_batch(batch, runs, self._markers)[0]

    def _query_document_sample_shuffle_indices(self, idx: int):
        if not self._drawn:
            return super()._query_document_sample_shuffle_indices(idx)
        idx = self.shuffle_index[idx]
        (beg, beg_off), (end, end_off) = self.sample_index[idx], self.sample_index[idx + 1]
        virtual = np.asarray(self.document_index[int(beg):int(end) + 1], dtype=np.int64)
        text = self._assemble(virtual)
        extra = int(self.config.add_extra_token_to_sequence)
        stop = len(text) - (self._virtual_length(virtual[-1]) - int(end_off) - extra)
        text = text[int(beg_off):stop]
        want = self.config.sequence_length + extra
        if len(text) < want:
            text = np.concatenate([text, np.full(want - len(text), self._pad_token_id, dtype=np.int64)])
        return text, virtual % len(self.dataset)

    def _virtual_length(self, v: int) -> int:
        offsets, _, lens, _ = self._runs
        a, b = int(offsets[v]), int(offsets[v + 1])
        return int(lens[a:b].sum()) + (b - a) + int(self._markers.bos is not None) + 1

    def _assemble(self, virtual: np.ndarray) -> np.ndarray:
        """The drawn documents `virtual` (epoch * N + doc), concatenated, built from the run
        table: [BOS] (marker, run tokens)* EOD per document, read from the memory-mapped .bin."""
        offsets, run_src, run_len, run_speech = self._runs
        if not hasattr(self, "_layout"):
            flat, self._doc_start, _ = self.dataset._flat("layout")
            self._layout = np.asarray(flat)
        first = np.asarray(offsets[virtual], dtype=np.int64)
        count = np.asarray(offsets[virtual + 1], dtype=np.int64) - first
        runs = np.repeat(first - (np.cumsum(count) - count), count) + np.arange(int(count.sum()))
        src = np.repeat(self._doc_start[virtual % len(self.dataset)], count) + run_src[runs]
        return il.assemble_runs(self._layout, count, src, run_len[runs], run_speech[runs], self._markers)[0]

    def __getitem__(self, idx: Optional[int]) -> dict[str, np.ndarray]:
        text, _ = self._query_document_sample_shuffle_indices(0 if idx is None else idx)
        text = np.asarray(text, dtype=np.int64)
        tokens, labels = text[:-1].copy(), text[1:].copy()
        pad = labels == self._pad_token_id if self._pad_token_id != NO_PAD else labels < 0
        modality = self.vocab.modality_of(labels)
        loss_mask = ~pad
        if self.config.loss_on == "speech":
            loss_mask &= modality == MODALITY_SPEECH
        elif self.config.loss_on == "text":
            loss_mask &= modality == MODALITY_TEXT
        if idx is None:
            loss_mask[:] = False
        tokens[tokens < 0] = 0
        labels[labels < 0] = 0
        sample = {"tokens": tokens, "labels": labels, "loss_mask": loss_mask.astype(np.float32), "modality": modality}
        if self.config.attention_across_documents:
            sample["position_ids"] = np.arange(len(tokens), dtype=np.int64)
        else:
            sample["attention_mask"], sample["position_ids"] = document_mask(tokens, self.vocab.eod)
        return sample


def document_mask(tokens: np.ndarray, eod: int) -> tuple[np.ndarray, np.ndarray]:
    """Block-diagonal causal mask ([1, s, s] bool, True = masked) and per-document positions;
    a document ends with (and includes) its EOD token."""
    s = len(tokens)
    seg = np.concatenate(([0], np.cumsum(tokens[:-1] == eod)))
    mask = (seg[:, None] != seg[None, :]) | np.triu(np.ones((s, s), dtype=bool), k=1)
    starts = np.flatnonzero(np.concatenate(([True], seg[1:] != seg[:-1])))
    positions = np.arange(s) - starts[seg]
    return mask[None], positions.astype(np.int64)


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
        il.check_config(data.interleave, prefix="data.interleave")
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return SLMDatasetConfig(
        random_seed=cfg.train.seed, sequence_length=cfg.train.seq_length, blend=(prefixes, weights),
        split=data.split, path_to_cache=data.cache_dir, tokenizer=vocab,
        reset_position_ids=False, reset_attention_mask=False, eod_mask_loss=False, create_attention_mask=False,
        mode=data.mode, interleave=data.interleave, loss_on=data.loss_on,
        attention_across_documents=data.attention_across_documents,
        kinds={p: e.kind for p, e in zip(prefixes, data.blend)},
    )


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
