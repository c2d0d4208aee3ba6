"""Per-epoch sample indices for dynamic interleaved data: a fresh interleaving every epoch.

Each epoch draws every document's interleaving (counter-based draws: a document's draw depends
only on (seed, epoch, key, n)), so document lengths change per epoch. GPTDataset's indices are
then built over virtual documents `epoch * N + doc` with those lengths, using the same
RandomState sequence as GPTDataset, so at epoch 0 the samples equal a static dataset's. The
draws are kept as a run table (a few int32 per document and epoch) from which samples are
assembled with array operations, never re-drawn.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np

from megatron_slm import document
from megatron_slm.data import interleave

logger = logging.getLogger(__name__)

# documents per forked drawing process, and at most this many processes
DRAW_CHUNK = 20000
DRAW_WORKERS = 16
INDEX_NAMES = ("document_index", "sample_index", "shuffle_index")
RUN_NAMES = ("run_offsets", "run_src", "run_len", "run_speech")


@dataclass
class Drawer:
    """Draws the interleavings of one stored dataset's documents."""
    stored: object                      # storage.StoredDataset
    cfg: object                         # config.InterleaveConfig
    seed: int
    markers: document.Markers

    def draw_docs(self, docs: np.ndarray, epoch: int) -> tuple[np.ndarray, ...]:
        """(lengths, run counts, run sources, run lengths, run is-speech) of `docs` in `epoch`,
        drawn in one vectorised batch. A run's source is its offset in the document's stored
        layout (text ids ++ unit ids)."""
        batch = self.stored.prepared_batch(docs)
        runs = interleave.draw_batch(batch, self.cfg, self.seed, epoch)
        counts = np.diff(runs.offsets)
        run_doc = np.repeat(np.arange(len(docs)), counts)
        lengths = (int(self.markers.bos is not None) + 1 + counts
                   + np.bincount(run_doc, weights=runs.length, minlength=len(docs)).astype(np.int64))
        src = runs.src - batch.layout_starts[run_doc]
        return (lengths.astype(np.int32), counts.astype(np.int32), src.astype(np.int32),
                runs.length.astype(np.int32), runs.speech.astype(bool))

    def draw_epoch(self, docs: np.ndarray, epoch: int) -> tuple[np.ndarray, list[np.ndarray]]:
        """Draw `docs` (a split's documents) for `epoch`: (lengths indexed by document, [run
        counts per document, run sources, run lengths, run is-speech]). Large splits are drawn
        by forked processes in document chunks (the result is the same)."""
        N = len(self.stored)
        docs = docs.astype(np.int64)
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
            parts = [self.draw_docs(c, epoch) for c in chunks]
        lengths, counts = np.zeros(N, dtype=np.int32), np.zeros(N, dtype=np.int32)
        lengths[docs] = np.concatenate([p[0] for p in parts])
        counts[docs] = np.concatenate([p[1] for p in parts])
        return lengths, [counts] + [np.concatenate([p[i] for p in parts]) for i in (2, 3, 4)]


_DRAWING: Optional[Drawer] = None  # the drawer in use, inherited by forked workers


def _draw_chunk(args: tuple[np.ndarray, int]) -> tuple[np.ndarray, ...]:
    docs, epoch = args
    return _DRAWING.draw_docs(docs, epoch)


class RunTable:
    """The drawn runs of every (epoch, document): samples are assembled from it."""

    def __init__(self, offsets: np.ndarray, src: np.ndarray, length: np.ndarray, speech: np.ndarray,
                 stored, markers: document.Markers) -> None:
        self.offsets, self.src, self.length, self.speech = offsets, src, length, speech
        self.markers = markers
        self.N = len(stored)
        flat, self.doc_start, _ = stored.flat("layout")
        self.layout = np.asarray(flat)

    def assemble(self, virtual: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ids, document offsets) of the drawn documents `virtual` (epoch * N + doc),
        concatenated: [BOS] (marker, run tokens)* EOD per document, read from the memory-mapped .bin."""
        first = np.asarray(self.offsets[virtual], dtype=np.int64)
        count = np.asarray(self.offsets[virtual + 1], dtype=np.int64) - first
        runs = np.repeat(first - (np.cumsum(count) - count), count) + np.arange(int(count.sum()))
        src = np.repeat(self.doc_start[virtual % self.N], count) + self.src[runs]
        return document.assemble_runs(self.layout, count, src, self.length[runs], self.speech[runs], self.markers)


def build_indices(drawer: Drawer, indices: np.ndarray, num_samples: Optional[int], seq_length: int,
                  extra_token: bool, dynamic: bool, drop_last: bool, cache_dir: str, cache_base: str,
                  write_cache: bool) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, ...]]:
    """((document_index, sample_index, shuffle_index), run arrays) for a split's `indices`,
    loaded from `cache_dir` when built before. `dynamic`: each epoch its own draw; otherwise
    every epoch repeats the epoch-0 draw."""
    from megatron.core.datasets import helpers
    from megatron.core.datasets.gpt_dataset import _build_shuffle_index

    names = INDEX_NAMES + RUN_NAMES
    paths = {k: os.path.join(cache_dir, f"{cache_base}-{k}.npy") for k in names}
    if all(os.path.isfile(p) for p in paths.values()):
        loaded = {k: np.load(paths[k], mmap_mode="r") for k in names}
        return tuple(loaded[k] for k in INDEX_NAMES), tuple(loaded[k] for k in RUN_NAMES)
    t0 = time.time()
    N, extra = len(drawer.stored), int(extra_token)
    wanted = (num_samples or 0) * seq_length + extra
    epochs = [drawer.draw_epoch(indices, 0)]
    per_epoch = [int(epochs[0][0][indices].sum())]
    while num_samples is not None and sum(per_epoch) < wanted:
        epochs.append(drawer.draw_epoch(indices, len(epochs)) if dynamic else epochs[0])
        per_epoch.append(int(epochs[-1][0][indices].sum()))
    num_epochs, total = len(epochs), sum(per_epoch)
    if num_epochs * N >= np.iinfo(np.int32).max:
        raise ValueError(f"{drawer.stored.path_prefix}: {num_epochs} epochs x {N} documents overflow the int32 document index")
    sizes = np.concatenate([e[0] for e in epochs]).astype(np.int32)
    run_offsets = np.concatenate(([0], np.cumsum(np.concatenate([e[1][0] for e in epochs]), dtype=np.int64)))
    run_src, run_len, run_speech = (np.concatenate([e[1][i] for e in epochs]) for i in (1, 2, 3))
    separate_final_epoch = False
    if num_epochs > 1:  # GPTDataset's rule: a short last epoch is shuffled on its own
        before_final = (total - per_epoch[-1] - extra) // seq_length
        per_epoch_samples = (per_epoch[-1] - extra) // seq_length
        separate_final_epoch = (num_samples - before_final) < int(0.80 * per_epoch_samples)
    rs = np.random.RandomState(drawer.seed)
    virtual = lambda epochs: np.concatenate([indices + e * N for e in epochs]).astype(np.int32)  # noqa: E731
    if separate_final_epoch:
        first = virtual(range(num_epochs - 1))
        rs.shuffle(first)
        last = virtual([num_epochs - 1])
        rs.shuffle(last)
        document_index = np.concatenate([first, last])
    else:
        document_index = virtual(range(num_epochs))
        rs.shuffle(document_index)
    sample_index = helpers.build_sample_idx(sizes, document_index, seq_length, 1, total, drop_last, bool(extra))
    n = sample_index.shape[0] - 1
    shuffle_index = (_build_shuffle_index(before_final, n, rs) if separate_final_epoch
                     else _build_shuffle_index(n, n, rs))
    arrays = dict(zip(names, (document_index, sample_index, shuffle_index, run_offsets, run_src, run_len, run_speech)))
    if write_cache:
        os.makedirs(cache_dir, exist_ok=True)
        for k in names[::-1]:  # document_index last: it marks the cache complete
            tmp = paths[k][:-4] + ".tmp.npy"
            np.save(tmp, arrays[k])
            os.replace(tmp, paths[k])
    logger.info("built dynamic indices for %s: %d epochs, %d samples in %.2fs",
                drawer.stored.path_prefix, num_epochs, n, time.time() - t0)
    return (document_index, sample_index, shuffle_index), (run_offsets, run_src, run_len, run_speech)
