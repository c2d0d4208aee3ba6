"""Headers before decoding: each input becomes an `AudioItem` (its duration drives bucketing) or a
`Skipped` with the reason (unreadable, empty, too short/long, a span outside its file)."""
from __future__ import annotations

import dataclasses
import os
from typing import Optional, Sequence

from megatron_slm.audio.skips import Skipped
from megatron_slm.audio.sources import AudioSource, Input, not_regular, utterance_id

# a span may end this far past the end of its file (rounding of manifest durations)
SPAN_TOLERANCE_S = 0.01


@dataclasses.dataclass
class AudioItem:
    """One utterance to load: `duration` (seconds, from the header or the span) drives bucketing."""

    id: str
    path: str
    duration: float
    source: Optional[AudioSource] = None  # None: all of the file at `path`


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
            # many there should be, and decoding is checked against that (audio/screen.py)
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
