"""The word-alignment record every format's reader produces, its error, and the one check of it.

Readers (canonical.py, textgrid.py, whisper.py, lhotse_manifests.py) build an `Alignment`;
`validate` judges it the same way whatever the format; problems raise `AlignmentError` naming
the file, line and word.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional

import numpy as np

from megatron_slm import fields

# a word may end this far past the audio (rounding of aligner outputs)
DURATION_TOLERANCE_S = 0.05


class AlignmentError(ValueError):
    """A malformed or inconsistent alignment; `reason` is a short key for skip counters."""

    def __init__(self, message: str, reason: str = "invalid_alignment") -> None:
        super().__init__(message)
        self.reason = reason


@dataclasses.dataclass
class Alignment:
    id: str
    words: list[str]
    starts: np.ndarray  # seconds, float64
    ends: np.ndarray
    where: str = ""  # "file:line" for messages

    def __len__(self) -> int:
        return len(self.words)


def validate(al: Alignment, audio_seconds: Optional[float] = None) -> Alignment:
    """start <= end, monotone, words non-empty, within the audio; raises AlignmentError."""
    if not al.words:
        raise AlignmentError(f"{al.where}: utterance {al.id!r} has no words (field 'words' is empty: an empty "
                             "transcript)", "empty_transcript")
    s, e = al.starts, al.ends
    limit = np.inf if audio_seconds is None else audio_seconds + DURATION_TOLERANCE_S
    if (all(al.words) and np.isfinite(s).all() and np.isfinite(e).all() and (s >= 0).all() and (s <= e).all()
            and (s[1:] >= e[:-1] - 1e-6).all() and (e <= limit).all()):
        return al  # the common case, checked with array operations; the loop below names the problem
    for j, w in enumerate(al.words):
        s, e = float(al.starts[j]), float(al.ends[j])
        tag = f"{al.where}: utterance {al.id!r} word {j} ({w!r})"
        if not w.strip():
            raise AlignmentError(f"{tag}: empty word")
        if not (math.isfinite(s) and math.isfinite(e)) or s < 0:
            raise AlignmentError(f"{tag}: bad time start={s} end={e}")
        if s > e:
            raise AlignmentError(f"{tag}: start {s} > end {e}")
        if j and s < float(al.ends[j - 1]) - 1e-6:
            raise AlignmentError(f"{tag}: starts at {s} before the previous word ends ({float(al.ends[j - 1])})")
        if audio_seconds is not None and e > audio_seconds + DURATION_TOLERANCE_S:
            raise AlignmentError(f"{tag}: ends at {e} s, after the audio ({audio_seconds} s)", "outside_audio")
    return al


def from_word_dicts(uid: str, words: list, where: str, word_key: str = "word") -> Alignment:
    """Words as given -- a word a string, times finite numbers (megatron_slm/fields.py), never
    converted -- or AlignmentError naming the first bad word and field."""
    if not isinstance(words, list):
        raise AlignmentError(f"{where}: field 'words' must be a list, not {type(words).__name__}")
    try:  # the common case in one pass; the loop below names the first bad word
        names = [w[word_key].strip() for w in words]
        starts, ends = [w["start"] for w in words], [w["end"] for w in words]
        fields.numbers(starts, where, "start")
        fields.numbers(ends, where, "end")
        return Alignment(uid, names, np.array(starts, dtype=np.float64), np.array(ends, dtype=np.float64), where)
    except (KeyError, TypeError, ValueError, AttributeError):
        pass
    for j, w in enumerate(words):
        if not isinstance(w, dict) or not all(k in w for k in (word_key, "start", "end")):
            raise AlignmentError(f"{where}: word {j} must have {word_key!r}, 'start' and 'end': {w!r}")
        try:
            fields.string(w[word_key], where, f"words[{j}].{word_key}", empty=True)
            fields.number(w["start"], where, f"words[{j}].start")
            fields.number(w["end"], where, f"words[{j}].end")
        except fields.FieldError as e:
            raise AlignmentError(str(e)) from None
    raise AlignmentError(f"{where}: malformed field 'words'")
