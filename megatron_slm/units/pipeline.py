"""On-the-fly units: audio files -> (DALI decode) -> features -> k-means -> unit records,
batched and without writing features. Used by tools/extract_units.py, the dataset builder and
evaluation.

    ex = UnitExtractor.from_args(extractor="hubert", model_dir="/models/mhubert-base-25hz",
                                 layer=11, kmeans="/models/km500.npy", device="cuda")
    for rec in ex.units_for_files(paths):      # UnitRecord per readable file, in bucket order
        rec.id, rec.units, rec.durations
    ex.skipped                                 # [Skipped(path, reason)] for bad files
"""
from __future__ import annotations

import collections
import contextlib
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from megatron_slm import conventions
from megatron_slm.audio.loader import AudioBatch, AudioLoader
from megatron_slm.audio.probe import AudioItem, probe
from megatron_slm.audio.skips import Skipped
from megatron_slm.audio.sources import Input
from megatron_slm.units.extractors import FeatureExtractor, build_extractor
from megatron_slm.units.kmeans import KMeansAssigner, centroids_sha256, load_centroids
from megatron_slm.units.records import UnitRecord, make_meta, make_record


def default_device() -> str:
    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    return "cpu"


def default_streams(device: torch.device) -> int:
    """CPU: one utterance stream per intra-op thread (up to 4), each forward on its own thread.
    HuBERT's matmuls at one utterance are too small to keep several OpenMP threads busy, so
    concurrent single-threaded forwards get more from the cores (+6-20% measured on 2 cores, see
    bench/RESULTS.md); the cap keeps the GIL-bound Python part of the model from serialising them.
    GPU: one stream of large batches."""
    return 1 if device.type != "cpu" else max(1, min(torch.get_num_threads(), 4))


@contextlib.contextmanager
def _intra_op_threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class FeatureStream:
    """Audio files -> per-utterance feature matrices [F, D] (what k-means training consumes)."""

    def __init__(self, extractor: FeatureExtractor, loader: AudioLoader, min_seconds: float = 0.1,
                 max_seconds: float | None = None, streams: int | None = None):
        self.extractor, self.loader = extractor, loader
        self.min_seconds, self.max_seconds = min_seconds, max_seconds
        self.streams = streams or default_streams(extractor.device)
        self.skipped: list[Skipped] = []
        self.warnings: list[Skipped] = []  # kept, but worth a line in the summary (silent files)

    def prepare(self, paths: Sequence[Input], ids: Sequence[str] | None = None) -> list[AudioItem]:
        """Probe files or `AudioSource`s (spans, in-memory audio); bad ones go to `skipped`."""
        items, skipped = probe(paths, ids, self.min_seconds, self.max_seconds)
        self.skipped.extend(skipped)
        return items

    def compute(self, batch: AudioBatch):
        """The per-batch work (runs in a worker thread when streams > 1)."""
        return self.extractor(batch.waves, batch.lengths)

    def computed(self, items: Sequence[AudioItem]) -> Iterator[tuple[AudioBatch, Any]]:
        """(batch, compute(batch)) in loader order. With several streams, up to `streams` batches
        are computed at once, each with threads // streams intra-op threads; decoding stays on
        this thread, at most streams + 1 decoded batches are held."""
        batches = self.loader.batches(items, on_skip=self.skipped.append, on_warn=self.warnings.append)
        if self.streams <= 1:
            for batch in batches:
                yield batch, self.compute(batch)
            return
        per_stream = max(1, torch.get_num_threads() // self.streams)
        with _intra_op_threads(per_stream), ThreadPoolExecutor(self.streams, thread_name_prefix="units") as pool:
            pending: collections.deque = collections.deque()
            for batch in batches:
                pending.append((batch, pool.submit(self.compute, batch)))
                if len(pending) > self.streams:
                    done, fut = pending.popleft()
                    yield done, fut.result()
            while pending:
                done, fut = pending.popleft()
                yield done, fut.result()

    def features_for_files(self, paths: Sequence[str], ids: Sequence[str] | None = None) -> Iterator[tuple[str, torch.Tensor]]:
        for batch, (feats, frames) in self.computed(self.prepare(paths, ids)):
            for i, item in enumerate(batch.items):
                yield item.id, feats[i, : int(frames[i])]


class UnitExtractor(FeatureStream):
    def __init__(self, extractor: FeatureExtractor, centroids: np.ndarray, loader: AudioLoader,
                 collapse: bool = True, kmeans_path: str | None = None, min_seconds: float = 0.1,
                 max_seconds: float | None = None, streams: int | None = None, compat: str = conventions.NONE):
        super().__init__(extractor, loader, min_seconds, max_seconds, streams)
        if centroids.shape[1] != extractor.dim:
            raise ValueError(f"k-means {kmeans_path or ''} has dimension {centroids.shape[1]} but the "
                             f"{extractor.name} extractor gives {extractor.dim}-dim features")
        self.assign = KMeansAssigner(centroids, extractor.device)
        self.collapse = collapse
        self.meta = make_meta(extractor.identity(), int(centroids.shape[0]), centroids_sha256(centroids),
                              os.path.abspath(kmeans_path) if kmeans_path else None, collapse, compat,
                              weights_sha256=extractor.weights_sha256())

    @property
    def inventory(self):
        """One codebook of K units (`vocab.UnitInventory`)."""
        from megatron_slm.units.records import inventory

        return inventory(self.meta)

    @classmethod
    def from_args(cls, extractor: str = "mel", kmeans: str | None = None, model_dir: str | None = None,
                  layer: int = 11, device: str | None = None, audio_backend: str = "auto",
                  max_batch_seconds: float | None = None, num_threads: int = 2, collapse: bool = True,
                  min_seconds: float = 0.1, max_seconds: float | None = None, dtype: str = "auto",
                  streams: int | None = None, compat: str = conventions.DEFAULT,
                  trust_pickle: bool = False) -> "UnitExtractor":
        """`compat`: slamkit pads the HuBERT input as SlamKit does; recorded in `meta`.
        `trust_pickle`: allow a pickled k-means (loading it runs its code)."""
        if not kmeans:
            raise ValueError("a k-means file is required (--kmeans: .npy centroids or a pickled sklearn KMeans)")
        centroids = load_centroids(kmeans, trust_pickle=trust_pickle)  # before the model: a refusal is cheap
        device = device or default_device()
        ext = build_extractor(extractor, model_dir=model_dir, layer=layer, device=device, dtype=dtype, compat=compat)
        loader = AudioLoader(audio_backend, device, num_threads, max_batch_seconds=max_batch_seconds)
        return cls(ext, centroids, loader, collapse, kmeans, min_seconds, max_seconds, streams, compat)

    @property
    def unit_seconds(self) -> float:
        return 1.0 / self.extractor.frame_rate

    def compute(self, batch: AudioBatch):
        feats, frames = super().compute(batch)
        # finite audio can still give non-finite features (an overflow in the extractor): their
        # nearest centroid is meaningless, so the utterance is skipped rather than given unit 0
        valid = torch.arange(feats.shape[1], device=feats.device)[None] < frames.to(feats.device)[:, None]
        finite = (torch.isfinite(feats).all(-1) | ~valid).all(1)
        return self.assign(feats).cpu().numpy(), frames.cpu().numpy(), finite.cpu().tolist()

    def units_for_items(self, items: Sequence[AudioItem]) -> Iterator[UnitRecord]:
        for batch, (ids, frames, finite) in self.computed(items):
            for i, item in enumerate(batch.items):
                if not finite[i]:
                    self.skipped.append(Skipped(item.path, f"non-finite features (the {self.extractor.name} "
                                                           "extractor overflowed on this audio)"))
                    continue
                secs = float(batch.lengths[i]) / self.loader.sample_rate
                yield make_record(item.id, item.path, ids[i, : frames[i]], self.unit_seconds, secs, self.collapse)

    def units_for_files(self, paths: Sequence[str], ids: Sequence[str] | None = None) -> Iterator[UnitRecord]:
        """Unit records for `paths` (ids default to file stems). Bad files are skipped and listed
        in `self.skipped`; records come in length-bucket order, not input order."""
        yield from self.units_for_items(self.prepare(paths, ids))
