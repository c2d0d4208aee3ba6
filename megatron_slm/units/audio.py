"""Audio loading for unit extraction: DALI decoding (CPU or GPU) with a soundfile fallback.

Both backends turn a list of files into `AudioBatch`es: mono float32 at 16 kHz, zero-padded
to the longest item, with per-item lengths. Batches are length-bucketed and bounded by total
padded seconds, so a batch of short files is wide and a batch of long files is narrow.

DALI facts this relies on (checked with DALI 1.x): `fn.decoders.audio` runs on the CPU only; resampling
can run on the GPU, so on a GPU we decode at the native rate and resample on the device (the
batch lands in GPU memory without a host round trip); `device_id=None` builds a CPU-only pipe.
"""
from __future__ import annotations

import collections
import dataclasses
import io
import os
import re
import stat
from typing import Callable, Iterable, Iterator, Optional, Sequence, Union

import numpy as np
import torch
from scipy.signal import resample_poly

from megatron_slm.batching import length_buckets

SAMPLE_RATE = 16000
# what --audio-dir lists and --file-list accepts: the formats both decoders read (DALI's audio
# decoder and libsndfile >= 1.1 decode all five)
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".opus", ".mp3")
# decoded audio may fall this short (or 2 %) of the length its header declares (resampling, codec
# framing, estimated mp3 lengths); more is a truncated file
TRUNCATION_TOLERANCE_S = 0.05

try:  # DALI is optional: the package must import (and work) without it.
    from nvidia.dali import fn as _dali_fn
    from nvidia.dali import pipeline_def as _dali_pipeline_def
    from nvidia.dali import types as _dali_types

    HAVE_DALI = True
except ImportError:  # pragma: no cover - depends on the environment
    HAVE_DALI = False


@dataclasses.dataclass(frozen=True)
class AudioSource:
    """Where one utterance's samples are, when that is more than a whole file: only the span
    [offset, offset + duration) of `path` (a cut of a long recording), and/or encoded audio that
    `data()` returns (a member of a tar shard, a dataset's audio column) instead of the file.
    `path` then labels the audio in records and messages."""

    path: str
    offset: float = 0.0
    duration: Optional[float] = None  # None: to the end of the file
    data: Optional[Callable[[], bytes]] = dataclasses.field(default=None, compare=False)

    @property
    def is_span(self) -> bool:
        return self.offset > 0 or self.duration is not None

    def open(self):
        """What soundfile reads: the file, or the encoded bytes."""
        return io.BytesIO(self.data()) if self.data is not None else self.path

    def encoded(self) -> bytes:
        if self.data is not None:
            return self.data()
        with open(self.path, "rb") as f:
            return f.read()


Input = Union[str, AudioSource]  # what probe() takes: a file path, or a source


@dataclasses.dataclass
class AudioItem:
    """One utterance to load: `duration` (seconds, from the header or the span) drives bucketing."""

    id: str
    path: str
    duration: float
    source: Optional[AudioSource] = None  # None: all of the file at `path`


@dataclasses.dataclass
class AudioBatch:
    items: list[AudioItem]
    waves: torch.Tensor  # [B, T] float32, zero padded, on the loader's device
    lengths: torch.Tensor  # [B] int64 samples, on the loader's device


@dataclasses.dataclass
class Skipped:
    """A file left out (or, in a warnings list, kept but reported) and why."""

    path: str
    reason: str

    @property
    def kind(self) -> str:
        """The reason without its details ("non-finite samples", "truncated", ...): what summaries count."""
        return re.split(r"[:(]", self.reason, maxsplit=1)[0].strip()


def reason_counts(entries: Iterable[Skipped]) -> str:
    """'2 x non-finite samples, 1 x truncated' (most frequent first)."""
    counts = collections.Counter(e.kind for e in entries)
    return ", ".join(f"{n} x {kind}" for kind, n in counts.most_common())


def is_audio_name(path: str) -> bool:
    return path.lower().endswith(AUDIO_EXTENSIONS)


def not_regular(path: str) -> Optional[str]:
    """Why `path` must not be opened, or None for a regular file (a FIFO blocks the reader forever)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None  # missing or unreadable: the decoder names the error
    if stat.S_ISREG(mode):
        return None
    kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else \
        "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a directory" if stat.S_ISDIR(mode) else "special"
    return f"not a regular file ({kind})"


def list_audio_files(audio_dir: str | os.PathLike, extensions: Sequence[str] = AUDIO_EXTENSIONS,
                     skipped: Optional[list] = None) -> list[str]:
    """The regular audio files under a directory (recursive), sorted for a stable order across
    ranks. Entries with an audio name that are no regular file (a FIFO, a device, a
    socket) are left out and appended to `skipped` as `Skipped`."""
    out, left = [], []
    for root, _, files in os.walk(audio_dir):
        for f in files:
            if not f.lower().endswith(tuple(extensions)):
                continue
            path = os.path.join(root, f)
            problem = not_regular(path)
            if problem is None:
                out.append(path)
            else:
                left.append(Skipped(path, problem))
    if skipped is not None:
        skipped.extend(sorted(left, key=lambda s: s.path))
    return sorted(out)


def utterance_id(path: str, root: str | None = None) -> str:
    """Id of a file: its path relative to `root` without extension ('/' kept), else the stem."""
    rel = os.path.relpath(path, root) if root else os.path.basename(path)
    return os.path.splitext(rel)[0].replace(os.sep, "/")


# a span may end this far past the end of its file (rounding of manifest durations)
SPAN_TOLERANCE_S = 0.01


def probe(paths: Sequence[Input], ids: Sequence[str] | None = None, min_seconds: float = 0.0,
          max_seconds: float | None = None) -> tuple[list[AudioItem], list[Skipped]]:
    """Read headers; unreadable, empty and too-short/long inputs become `Skipped` with a reason.
    An `AudioSource` span must lie within its file; its duration is the span's."""
    import soundfile as sf

    items, skipped = [], []
    for i, entry in enumerate(paths):
        src = entry if isinstance(entry, AudioSource) else None
        path = src.path if src is not None else entry
        problem = not_regular(path) if src is None or src.data is None else None
        if problem:
            skipped.append(Skipped(path, problem))
            continue
        try:
            handle = src.open() if src is not None else path
            info = sf.info(handle)
            # libsndfile counts only the frames a truncated WAV still holds; its header says how
            # many there should be, and decoding is checked against that (`screen`)
            frames = max(info.frames, declared_wav_frames(handle) or 0) if info.format == "WAV" else info.frames
        except Exception as e:  # soundfile raises LibsndfileError/RuntimeError/OSError variously
            skipped.append(Skipped(path, f"unreadable: {str(e).splitlines()[0][:200]}"))
            continue
        dur = frames / info.samplerate if info.samplerate else 0.0
        if src is not None and src.is_span:
            end = src.offset + (src.duration if src.duration is not None else dur - src.offset)
            if end > dur + SPAN_TOLERANCE_S or src.offset < 0:
                skipped.append(Skipped(path, f"span outside the file: [{src.offset:.3f}, {end:.3f}] s of "
                                             f"{dur:.3f} s"))
                continue
            dur = max(0.0, min(end, dur) - src.offset)
        if frames <= 0 or dur <= 0:
            skipped.append(Skipped(path, "empty (0 samples)"))
        elif dur < min_seconds:
            skipped.append(Skipped(path, f"too short ({dur:.3f} s < {min_seconds} s)"))
        elif max_seconds is not None and dur > max_seconds:
            skipped.append(Skipped(path, f"too long ({dur:.1f} s > {max_seconds} s)"))
        else:
            items.append(AudioItem(ids[i] if ids is not None else utterance_id(path), path, dur, src))
    return items, skipped


def declared_wav_frames(handle) -> Optional[int]:
    """Frames a RIFF/WAVE header declares (data chunk bytes / block align), None when it does not
    say (no data chunk found, a streaming writer's placeholder size). `handle`: a path or a
    seekable binary file object."""
    f = open(handle, "rb") if isinstance(handle, (str, os.PathLike)) else handle
    try:
        f.seek(0)
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        block = None
        for _ in range(64):  # chunks before the data chunk (fmt, LIST, fact, ...)
            hdr = f.read(8)
            if len(hdr) < 8:
                return None
            cid, size = hdr[:4], int.from_bytes(hdr[4:], "little")
            if cid == b"data":
                return size // block if block and 0 < size < 0xFFFFFFFF else None
            if cid == b"fmt ":
                body = f.read(size + (size & 1))
                block = int.from_bytes(body[12:14], "little") if len(body) >= 14 else None
            else:
                f.seek(size + (size & 1), 1)  # chunks are word aligned
        return None
    finally:
        if f is not handle:
            f.close()


def screen(waves: torch.Tensor, lengths: torch.Tensor, items: Sequence[AudioItem], sample_rate: int
           ) -> tuple[list[Optional[str]], list[Optional[str]]]:
    """The one check of decoded audio, whatever decoded it: per item, (why it must be skipped,
    what to warn about), each None when nothing. Skipped: NaN/Inf samples (one such file would
    poison a k-means codebook or become a run of one unit), fewer samples than the header
    declares (a truncated file). Warned: all samples zero (silence is valid audio, but a corpus
    of it is worth knowing about). `waves` [B, T] zero padded, on any device."""
    stats = torch.stack([torch.isnan(waves).sum(1), torch.isinf(waves).sum(1), (waves != 0).any(1).long(),
                         lengths.to(waves.device).long()], 1)
    skips, warns = [], []
    for item, (nan, inf, nonzero, n) in zip(items, stats.cpu().tolist()):  # one transfer per batch
        skip = warn = None
        declared = item.duration * sample_rate
        if nan or inf:
            skip = f"non-finite samples ({nan} NaN, {inf} Inf)"
        elif n < declared - max(TRUNCATION_TOLERANCE_S * sample_rate, 0.02 * declared):
            skip = f"truncated: the header declares {item.duration:.3f} s, {n / sample_rate:.3f} s decoded"
        elif not nonzero:
            warn = "silent (all samples zero): kept"
        skips.append(skip)
        warns.append(warn)
    return skips, warns


def bucket_batches(items: Sequence[AudioItem], max_batch_seconds: float, max_batch_size: int = 64) -> list[list[AudioItem]]:
    """Sort by duration and cut into batches whose padded size (n × longest) stays within
    `max_batch_seconds`; an item longer than the budget gets a batch of its own."""
    ordered = sorted(items, key=lambda it: it.id)  # ties in duration break by id
    groups = length_buckets([it.duration for it in ordered], max_batch_seconds, max_batch_size)
    return [[ordered[i] for i in group] for group in groups]


def load_audio(path: Input, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode one file (or only a source's span: soundfile seeks, the rest is never decoded) with
    soundfile, downmix to mono and resample (polyphase) to `sample_rate`."""
    import soundfile as sf

    if isinstance(path, AudioSource):
        with sf.SoundFile(path.open()) as f:
            sr = f.samplerate
            start = int(round(path.offset * sr))
            frames = -1 if path.duration is None else int(round(path.duration * sr))
            if start:
                f.seek(min(start, f.frames))
            audio = f.read(frames, dtype="float32", always_2d=True)
    else:
        audio, sr = sf.read(path, dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if sr != sample_rate:
        g = np.gcd(int(sr), sample_rate)
        audio = resample_poly(audio, sample_rate // g, int(sr) // g).astype(np.float32)
    return audio


def pad_batch(waves: Sequence[np.ndarray], device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([w.size for w in waves], dtype=torch.int64)
    out = torch.zeros(len(waves), int(lengths.max()), dtype=torch.float32)
    for i, w in enumerate(waves):
        out[i, : w.size] = torch.from_numpy(w)
    return out.to(device), lengths.to(device)


class AudioLoader:
    """Iterate `AudioBatch`es for a list of `AudioItem`s.

    backend: "dali" (DALI pipeline; GPU resampling when `device` is CUDA), "soundfile"
    (plain decode + scipy resampling), or "auto" (DALI when installed). A batch that DALI
    cannot decode is retried file by file with soundfile so one bad file costs one file.
    """

    def __init__(self, backend: str = "auto", device: str | torch.device = "cpu", num_threads: int = 2,
                 sample_rate: int = SAMPLE_RATE, max_batch_seconds: float | None = None, max_batch_size: int = 64):
        if backend == "auto":
            backend = "dali" if HAVE_DALI else "soundfile"
        if backend not in ("dali", "soundfile"):
            raise ValueError(f"unknown audio backend {backend!r} (choose dali, soundfile or auto)")
        if backend == "dali" and not HAVE_DALI:
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
        source = _EncodedSource(plan, pending)
        pipe = _build_dali_pipeline(source, max(len(b) for b in plan) if plan else 1, self.num_threads,
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
            yield AudioBatch(batch, *_dali_to_torch(waves, lengths, self.device))


def _report(on_skip, skipped: Skipped) -> None:
    if on_skip is not None:
        on_skip(skipped)


class _EncodedSource:
    """External-source callback: the encoded bytes of the next planned batch. It records each
    batch it hands out in `pending`, so outputs (which come back in order) can be matched."""

    def __init__(self, plan: list[list[AudioItem]], pending: collections.deque):
        self._it = iter(plan)
        self._pending = pending

    def __call__(self):
        batch = next(self._it)  # StopIteration ends the DALI epoch
        self._pending.append(batch)
        return [np.frombuffer(item.source.encoded(), dtype=np.uint8) if item.source is not None
                else np.fromfile(item.path, dtype=np.uint8) for item in batch]

    def remaining(self) -> Iterable[list[AudioItem]]:
        return self._it


def _build_dali_pipeline(source: _EncodedSource, batch_size: int, num_threads: int, device_id: int | None,
                         sample_rate: int):
    @_dali_pipeline_def(batch_size=batch_size, num_threads=num_threads, device_id=device_id,
                        prefetch_queue_depth=1, exec_dynamic=True)
    def pipe():
        encoded = _dali_fn.external_source(source=source, batch=True, dtype=_dali_types.UINT8, ndim=1,
                                           no_copy=False)
        if device_id is None:
            # CPU: the decoder resamples while decoding.
            audio, _ = _dali_fn.decoders.audio(encoded, dtype=_dali_types.FLOAT, downmix=True,
                                               sample_rate=sample_rate)
        else:
            # GPU: decode at the native rate on the CPU, resample on the device.
            audio, rate = _dali_fn.decoders.audio(encoded, dtype=_dali_types.FLOAT, downmix=True)
            audio = _dali_fn.audio_resample(audio.gpu(), in_rate=rate, out_rate=float(sample_rate),
                                            dtype=_dali_types.FLOAT)
        lengths = audio.shape(dtype=_dali_types.INT64)
        return _dali_fn.pad(audio, fill_value=0.0), lengths

    return pipe()


def _dali_to_torch(waves, lengths, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    n = torch.from_numpy(np.asarray(lengths.as_array()).reshape(-1).astype(np.int64))
    dense = waves.as_tensor()
    if device.type == "cuda":
        from nvidia.dali.plugin.pytorch import feed_ndarray

        out = torch.empty(tuple(dense.shape()), dtype=torch.float32, device=device)
        feed_ndarray(dense, out, cuda_stream=torch.cuda.current_stream(device))
        return out, n.to(device)
    return torch.from_numpy(np.array(dense)), n
