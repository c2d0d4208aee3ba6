"""Per-utterance word timings from four formats, validated, keyed by utterance id.

Formats (chosen from the path, or `fmt`):
  * canonical JSONL (ours): one `{"id", "audio", "text", "words": [{"word", "start", "end"}]}` per line
  * Montreal Forced Aligner TextGrid: a directory of `<id>.TextGrid` files, tier "words"
    (long or short text format); empty intervals are silences and are dropped
  * Whisper-style word-timestamp JSON: a directory of `<id>.json` files with
    `segments[].words[]` (openai-whisper) or `word_segments[]` (WhisperX)
  * Lhotse: a CutSet, a supervisions manifest or a Shar directory, words from
    `supervision.alignment["word"]` (data/lhotse_manifests.py; needs the `formats` extra)

Every format goes through the same `validate`; a Lhotse cut without word alignments stays in
the index and raises its reason (no_supervision, no_word_alignment) when asked for.
`AlignmentIndex` maps an id to a lazily parsed `Alignment`, so worker processes parse only
their own utterances. Problems raise `AlignmentError` naming the file, line and word.
"""
from __future__ import annotations

import dataclasses
import json
import math
import operator
import os
import re
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from megatron_slm import fields
from megatron_slm.jsonio import loads

_WORD_FIELDS = operator.itemgetter("word", "start", "end")
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


def _from_word_dicts(uid: str, words: list, where: str, word_key: str = "word") -> Alignment:
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


def parse_canonical(obj: object, where: str) -> Alignment:
    if not isinstance(obj, dict):
        raise AlignmentError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    for field in ("id", "words"):
        if field not in obj:
            raise AlignmentError(f"{where}: missing field {field!r}")
    if type(obj["id"]) is not str or not obj["id"]:
        raise AlignmentError(f"{where}: field 'id' must be a non-empty string, not {obj['id']!r}")
    return _from_word_dicts(obj["id"], obj["words"], where)


def audio_entries(path: str | os.PathLike) -> list[tuple[str, str, str]]:
    """(id, audio path as written, file:line) of each record of a canonical alignments JSONL:
    what unit extraction needs from it. Raises AlignmentError naming the file:line and field (a
    line that is no object, a missing or non-string id/audio, an id seen on an earlier line)."""
    from megatron_slm.jsonio import iter_jsonl

    out, seen = [], {}
    for where, obj in iter_jsonl(path, error=AlignmentError):
        if not isinstance(obj, dict):
            raise AlignmentError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        try:
            uid = fields.string(obj.get("id"), where, "id")
            audio = fields.string(obj.get("audio"), where, "audio")
        except fields.FieldError as e:
            raise AlignmentError(str(e)) from None
        if uid in seen:
            raise AlignmentError(f"{where}: utterance id {uid!r} already on {seen[uid]}", "duplicate_id")
        seen[uid] = where
        out.append((uid, audio, where))
    return out


def parse_whisper(obj: object, uid: str, where: str) -> Alignment:
    if not isinstance(obj, dict):
        raise AlignmentError(f"{where}: expected a JSON object")
    if isinstance(obj.get("word_segments"), list):  # WhisperX
        words = obj["word_segments"]
    elif isinstance(obj.get("segments"), list):
        words = [w for seg in obj["segments"] for w in ((seg.get("words") if isinstance(seg, dict) else None) or [])]
    else:
        raise AlignmentError(f"{where}: no 'segments[].words' nor 'word_segments' (word timestamps missing?)")
    return _from_word_dicts(uid, words, where)


_BRACKET = re.compile(r"\[\s*\d*\s*\]")
_TOKEN = re.compile(r'"((?:[^"]|"")*)"|([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)')


def parse_textgrid(text: str, uid: str, where: str, tier: str = "words") -> Alignment:
    """Both Praat text formats reduce to the same stream of strings and numbers once labels
    (`xmin =`, `item [1]:`) are dropped: header, then per tier class, name, xmin, xmax, size and
    size x (xmin, xmax, text)."""
    toks: list = []
    for m in _TOKEN.finditer(_BRACKET.sub(" ", text)):
        toks.append(m.group(1).replace('""', '"') if m.group(1) is not None else float(m.group(2)))
    try:
        if toks[:2] != ["ooTextFile", "TextGrid"]:
            raise AlignmentError(f"{where}: not a Praat TextGrid (header {toks[:2]!r})")
        pos, n_tiers = 5, int(toks[4])
        for _ in range(n_tiers):
            cls, name, size = toks[pos], toks[pos + 1], int(toks[pos + 4])
            pos += 5
            width = 3 if cls == "IntervalTier" else 2
            if name == tier and cls == "IntervalTier":
                names, starts, ends = [], [], []
                for j in range(size):
                    s, e, w = toks[pos + 3 * j: pos + 3 * j + 3]
                    if str(w).strip():
                        names.append(str(w).strip())
                        starts.append(s)
                        ends.append(e)
                return Alignment(uid, names, np.asarray(starts, float), np.asarray(ends, float), where)
            pos += width * size
    except (IndexError, ValueError, TypeError):
        raise AlignmentError(f"{where}: truncated or malformed TextGrid") from None
    raise AlignmentError(f"{where}: no interval tier named {tier!r}")


def detect_format(path: str | os.PathLike) -> str:
    from megatron_slm.data import lhotse_manifests

    p = Path(path)
    if lhotse_manifests.detect(p):
        return "lhotse"
    if p.is_file():
        return "jsonl"
    if p.is_dir():
        names = os.listdir(p)
        if any(n.lower().endswith(".textgrid") for n in names):
            return "textgrid"
        if any(n.endswith(".json") for n in names):
            return "whisper"
        raise AlignmentError(f"{p}: directory holds no .TextGrid or .json alignment files")
    raise AlignmentError(f"{p}: no such alignment file or directory")


class AlignmentIndex:
    """id -> Alignment, parsed on demand. For JSONL the raw lines are kept (cheap to fork)."""

    def __init__(self, path: str | os.PathLike, fmt: str = "auto") -> None:
        self.path = str(path)
        self.format = detect_format(path) if fmt == "auto" else fmt
        self._entries: dict[str, tuple] = {}
        self.problems: list[tuple[str, str]] = []  # (reason, message) of lines that could not be indexed
        if self.format == "jsonl":
            self._index_jsonl()
        elif self.format == "lhotse":
            self._index_lhotse()
        else:
            suffix = ".textgrid" if self.format == "textgrid" else ".json"
            for name in sorted(os.listdir(self.path)):
                if name.lower().endswith(suffix):
                    uid = name[: -len(suffix)]
                    self._add(uid, (os.path.join(self.path, name),), os.path.join(self.path, name))

    def _add(self, uid: str, entry: tuple, where: str) -> None:
        if uid in self._entries:
            self.problems.append(("duplicate_id", f"{where}: utterance id {uid!r} appears again (first kept)"))
            return
        self._entries[uid] = entry

    def _index_jsonl(self) -> None:
        with open(self.path, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                where = f"{self.path}:{lineno}"
                if not raw.strip():
                    continue
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError:
                    self.problems.append(("non_utf8", f"{where}: not UTF-8"))
                    continue
                try:
                    obj = loads(raw)
                except json.JSONDecodeError as e:
                    self.problems.append(("malformed_json", f"{where}: not JSON ({e.msg})"))
                    continue
                if not isinstance(obj, dict):
                    self.problems.append(("malformed_json", f"{where}: expected a JSON object, got "
                                                               f"{type(obj).__name__}"))
                    continue
                if type(obj.get("id")) is not str or not obj["id"]:
                    self.problems.append(("invalid_alignment", f"{where}: field 'id' must be a non-empty string, "
                                                               f"not {obj.get('id')!r}"))
                    continue
                self._add(obj["id"], (raw, lineno), where)

    def _index_lhotse(self) -> None:
        from megatron_slm.data import lhotse_manifests

        for e in lhotse_manifests.read_manifest(self.path, problems=self.problems):
            try:
                payload = lhotse_manifests.cut_words(e)
            except AlignmentError as err:  # kept: the units record of this cut is skipped for this reason
                payload = (err.reason, str(err))
            self._add(e.id, (payload, e.where), e.where)

    def __contains__(self, uid: str) -> bool:
        return uid in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def ids(self) -> list[str]:
        return list(self._entries)

    def unusable(self, uid: str) -> Optional[tuple[str, str]]:
        """(reason, message) when `uid` is indexed but has no usable words (a Lhotse cut without
        word alignments), else None."""
        entry = self._entries.get(uid)
        if self.format == "lhotse" and entry is not None and len(entry[0]) == 2:
            return entry[0]
        return None

    def word_fields(self, uid: str) -> tuple[Sequence, Sequence, Sequence]:
        """(words, starts, ends) of `uid`, unvalidated and unconverted (the fast path of batch
        preparation; anything malformed raises, and `get` + `validate` then name the problem)."""
        if self.format == "jsonl":
            raw = self._entries[uid][0]
            if b"true" in raw or b"false" in raw:
                raise ValueError(uid)  # perhaps a boolean time, which array("d") would take as 0/1
            return tuple(zip(*map(_WORD_FIELDS, loads(raw)["words"])))
        al = self.get(uid)
        return al.words, al.starts, al.ends

    def get(self, uid: str) -> Alignment:
        entry = self._entries[uid]
        if self.format == "jsonl":
            raw, lineno = entry
            return parse_canonical(loads(raw), f"{self.path}:{lineno}")
        if self.format == "lhotse":
            payload, where = entry
            if len(payload) == 2:  # (reason, message) of a cut without usable words
                raise AlignmentError(payload[1], payload[0])
            words, starts, ends = payload
            return Alignment(uid, list(words), starts, ends, where)
        (file,) = entry
        try:
            text = Path(file).read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise AlignmentError(f"{file}: not UTF-8", "non_utf8") from None
        if self.format == "textgrid":
            return parse_textgrid(text, uid, file)
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise AlignmentError(f"{file}: not JSON ({e.msg})", "malformed_json") from None
        return parse_whisper(obj, uid, file)
