"""On-the-fly units: audio files -> (DALI decode) -> features -> k-means -> unit records,
batched and without writing features. Used by tools/extract_units.py, the dataset builder and
evaluation.

    ex = UnitExtractor.from_args(extractor="hubert", model_dir="/models/mhubert-base-25hz",
                                 layer=11, kmeans="/models/km500.bin", device="cuda")
    for rec in ex.units_for_files(paths):      # UnitRecord per readable file, in bucket order
        rec.id, rec.units, rec.durations
    ex.skipped                                 # [Skipped(path, reason)] for bad files
"""
from __future__ import annotations

import os
from typing import Iterator, Sequence

import numpy as np
import torch

from megatron_slm.units.audio import AudioBatch, AudioItem, AudioLoader, Skipped, probe
from megatron_slm.units.extractors import FeatureExtractor, build_extractor
from megatron_slm.units.kmeans import KMeansAssigner, centroids_sha256, load_centroids
from megatron_slm.units.records import UnitRecord, make_meta, make_record


def default_device() -> str:
    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    return "cpu"


class FeatureStream:
    """Audio files -> per-utterance feature matrices [F, D] (what k-means training consumes)."""

    def __init__(self, extractor: FeatureExtractor, loader: AudioLoader, min_seconds: float = 0.1,
                 max_seconds: float | None = None):
        self.extractor, self.loader = extractor, loader
        self.min_seconds, self.max_seconds = min_seconds, max_seconds
        self.skipped: list[Skipped] = []

    def prepare(self, paths: Sequence[str], ids: Sequence[str] | None = None) -> list[AudioItem]:
        items, skipped = probe(paths, ids, self.min_seconds, self.max_seconds)
        self.skipped.extend(skipped)
        return items

    def batches(self, items: Sequence[AudioItem]) -> Iterator[tuple[AudioBatch, torch.Tensor, torch.Tensor]]:
        for batch in self.loader.batches(items, on_skip=self.skipped.append):
            feats, frames = self.extractor(batch.waves, batch.lengths)
            yield batch, feats, frames

    def features_for_files(self, paths: Sequence[str], ids: Sequence[str] | None = None) -> Iterator[tuple[str, torch.Tensor]]:
        for batch, feats, frames in self.batches(self.prepare(paths, ids)):
            for i, item in enumerate(batch.items):
                yield item.id, feats[i, : int(frames[i])]


class UnitExtractor(FeatureStream):
    def __init__(self, extractor: FeatureExtractor, centroids: np.ndarray, loader: AudioLoader,
                 collapse: bool = True, kmeans_path: str | None = None, min_seconds: float = 0.1,
                 max_seconds: float | None = None):
        super().__init__(extractor, loader, min_seconds, max_seconds)
        if centroids.shape[1] != extractor.dim:
            raise ValueError(f"k-means {kmeans_path or ''} has dimension {centroids.shape[1]} but the "
                             f"{extractor.name} extractor gives {extractor.dim}-dim features")
        self.assign = KMeansAssigner(centroids, extractor.device)
        self.collapse = collapse
        self.meta = make_meta(extractor.identity(), int(centroids.shape[0]), centroids_sha256(centroids),
                              os.path.abspath(kmeans_path) if kmeans_path else None, collapse)

    @classmethod
    def from_args(cls, extractor: str = "mel", kmeans: str | None = None, model_dir: str | None = None,
                  layer: int = 11, device: str | None = None, audio_backend: str = "auto",
                  max_batch_seconds: float | None = None, num_threads: int = 2, collapse: bool = True,
                  min_seconds: float = 0.1, max_seconds: float | None = None) -> "UnitExtractor":
        if not kmeans:
            raise ValueError("a k-means file is required (--kmeans: .npy centroids or a pickled sklearn KMeans)")
        device = device or default_device()
        ext = build_extractor(extractor, model_dir=model_dir, layer=layer, device=device)
        loader = AudioLoader(audio_backend, device, num_threads, max_batch_seconds=max_batch_seconds)
        return cls(ext, load_centroids(kmeans), loader, collapse, kmeans, min_seconds, max_seconds)

    @property
    def unit_seconds(self) -> float:
        return 1.0 / self.extractor.frame_rate

    def units_for_items(self, items: Sequence[AudioItem]) -> Iterator[UnitRecord]:
        for batch, feats, frames in self.batches(items):
            ids = self.assign(feats).cpu().numpy()
            frames = frames.cpu().numpy()
            for i, item in enumerate(batch.items):
                secs = float(batch.lengths[i]) / self.loader.sample_rate
                yield make_record(item.id, item.path, ids[i, : frames[i]], self.unit_seconds, secs, self.collapse)

    def units_for_files(self, paths: Sequence[str], ids: Sequence[str] | None = None) -> Iterator[UnitRecord]:
        """Unit records for `paths` (ids default to file stems). Bad files are skipped and listed
        in `self.skipped`; records come in length-bucket order, not input order."""
        yield from self.units_for_items(self.prepare(paths, ids))
