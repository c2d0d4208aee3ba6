"""Decoded batches for unit extraction: DALI decoding (CPU or GPU) with a soundfile fallback.

Both backends turn a list of files into `AudioBatch`es: mono float32 at 16 kHz, zero-padded
to the longest item, with per-item lengths. Batches are length-bucketed and bounded by total
padded seconds, so a batch of short files is wide and a batch of long files is narrow.
"""
from __future__ import annotations

import collections
import dataclasses
from typing import Callable, Iterator, Sequence

import torch

from megatron_slm.audio import decode_dali
from megatron_slm.audio.decode_soundfile import SAMPLE_RATE, load_audio, pad_batch
from megatron_slm.audio.probe import AudioItem
from megatron_slm.audio.screen import screen
from megatron_slm.audio.skips import Skipped
from megatron_slm.batching import length_buckets


@dataclasses.dataclass
class AudioBatch:
    items: list[AudioItem]
    waves: torch.Tensor  # [B, T] float32, zero padded, on the loader's device
    lengths: torch.Tensor  # [B] int64 samples, on the loader's device


def bucket_batches(items: Sequence[AudioItem], max_batch_seconds: float, max_batch_size: int = 64) -> list[list[AudioItem]]:
    """Sort by duration and cut into batches whose padded size (n × longest) stays within
    `max_batch_seconds`; an item longer than the budget gets a batch of its own."""
    ordered = sorted(items, key=lambda it: it.id)  # ties in duration break by id
    groups = length_buckets([it.duration for it in ordered], max_batch_seconds, max_batch_size)
    return [[ordered[i] for i in group] for group in groups]


class AudioLoader:
    """Iterate `AudioBatch`es for a list of `AudioItem`s.

    backend: "dali" (DALI pipeline; GPU resampling when `device` is CUDA), "soundfile"
    (plain decode + scipy resampling), or "auto" (DALI when installed). A batch that DALI
    cannot decode is retried file by file with soundfile so one bad file costs one file.
    """

    def __init__(self, backend: str = "auto", device: str | torch.device = "cpu", num_threads: int = 2,
                 sample_rate: int = SAMPLE_RATE, max_batch_seconds: float | None = None, max_batch_size: int = 64):
        if backend == "auto":
            backend = "dali" if decode_dali.HAVE_DALI else "soundfile"
        if backend not in ("dali", "soundfile"):
            raise ValueError(f"unknown audio backend {backend!r} (choose dali, soundfile or auto)")
        if backend == "dali" and not decode_dali.HAVE_DALI:
            raise RuntimeError("audio backend 'dali' requested but nvidia-dali is not installed "
                               "(pip install nvidia-dali-cuda120, or use --audio-backend soundfile)")
        self.backend = backend
        self.device = torch.device(device)
        self.num_threads = num_threads
        self.sample_rate = sample_rate
        if max_batch_seconds is None:
            # Measured (bench/extract_units.py): on the CPU a padded batch only adds work -- one
            # utterance already saturates the cores -- so batching pays off on the GPU alone.
            max_batch_seconds = 120.0 if self.device.type == "cuda" else 0.0
        self.max_batch_seconds = max_batch_seconds
        self.max_batch_size = max_batch_size

    def batches(self, items: Sequence[AudioItem], on_skip: Callable[[Skipped], None] | None = None,
                on_warn: Callable[[Skipped], None] | None = None) -> Iterator[AudioBatch]:
        """Decoded batches; bad files go to `on_skip`, files kept with a remark (silence) to
        `on_warn`. Every batch, from either decoder, passes `screen` before it is yielded."""
        for batch in self._decoded(items, on_skip):
            skips, warns = screen(batch.waves, batch.lengths, batch.items, self.sample_rate)
            for item, why in zip(batch.items, warns):
                if why:
                    _report(on_warn, Skipped(item.path, why))
            if any(skips):
                keep = [i for i, why in enumerate(skips) if why is None]
                for item, why in zip(batch.items, skips):
                    if why:
                        _report(on_skip, Skipped(item.path, why))
                if not keep:
                    continue
                rows = torch.tensor(keep, device=batch.waves.device)
                batch = AudioBatch([batch.items[i] for i in keep], batch.waves[rows], batch.lengths[rows])
            yield batch

    def _decoded(self, items: Sequence[AudioItem], on_skip) -> Iterator[AudioBatch]:
        rest = items
        if self.backend == "dali":
            # DALI decodes whole files: spans of long recordings are read with soundfile, which
            # seeks to the span and decodes only it
            whole = [it for it in items if it.source is None or not it.source.is_span]
            rest = [it for it in items if it.source is not None and it.source.is_span]
            if whole:
                yield from self._dali_batches(bucket_batches(whole, self.max_batch_seconds, self.max_batch_size), on_skip)
        for batch in bucket_batches(rest, self.max_batch_seconds, self.max_batch_size) if rest else []:
            out = self._soundfile_batch(batch, on_skip)
            if out is not None:
                yield out

    # -- soundfile ---------------------------------------------------------------------------
    def _soundfile_batch(self, batch: list[AudioItem], on_skip) -> AudioBatch | None:
        kept, waves = [], []
        for item in batch:
            try:
                wave = load_audio(item.source or item.path, self.sample_rate)
            except Exception as e:
                _report(on_skip, Skipped(item.path, f"decode failed: {str(e).splitlines()[0][:200]}"))
                continue
            if wave.size == 0:
                _report(on_skip, Skipped(item.path, "empty after decoding"))
                continue
            kept.append(item)
            waves.append(wave)
        if not kept:
            return None
        w, n = pad_batch(waves, self.device)
        return AudioBatch(kept, w, n)

    # -- DALI --------------------------------------------------------------------------------
    def _dali_batches(self, plan: list[list[AudioItem]], on_skip) -> Iterator[AudioBatch]:
        on_gpu = self.device.type == "cuda"
        pending: collections.deque[list[AudioItem]] = collections.deque()
        source = decode_dali.EncodedSource(plan, pending)
        pipe = decode_dali.build_pipeline(source, max(len(b) for b in plan) if plan else 1, self.num_threads,
                                          self.device.index if on_gpu else None, self.sample_rate)
        pipe.build()
        while True:
            try:
                outputs = pipe.run()
            except StopIteration:
                break
            except RuntimeError:
                # One undecodable file fails the whole DALI batch and invalidates the pipeline:
                # redo that batch file by file, then rebuild the pipeline for the rest.
                batch = pending.popleft()
                out = self._soundfile_batch(batch, on_skip)
                if out is not None:
                    yield out
                rest = [pending.popleft() for _ in range(len(pending))] + list(source.remaining())
                yield from self._dali_batches(rest, on_skip)
                return
            batch = pending.popleft()
            waves, lengths = outputs
            yield AudioBatch(batch, *decode_dali.to_torch(waves, lengths, self.device))


def _report(on_skip, skipped: Skipped) -> None:
    if on_skip is not None:
        on_skip(skipped)
