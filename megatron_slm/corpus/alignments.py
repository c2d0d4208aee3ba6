"""Per-utterance word timings from four formats, validated, keyed by utterance id.

Formats (chosen from the path, or `fmt`):
  * canonical JSONL (ours): one `{"id", "audio", "text", "words": [{"word", "start", "end"}]}` per line
  * Montreal Forced Aligner TextGrid: a directory of `<id>.TextGrid` files, tier "words"
    (long or short text format); empty intervals are silences and are dropped
  * Whisper-style word-timestamp JSON: a directory of `<id>.json` files with
    `segments[].words[]` (openai-whisper) or `word_segments[]` (WhisperX)
  * Lhotse: a CutSet, a supervisions manifest or a Shar directory, words from
    `supervision.alignment["word"]` (lhotse_manifests.py; needs the `formats` extra)

Every format goes through the same `validate`; a Lhotse cut without word alignments stays in
the index and raises its reason (no_supervision, no_word_alignment) when asked for.
`AlignmentIndex` maps an id to a lazily parsed `Alignment`, so worker processes parse only
their own utterances. Problems raise `AlignmentError` naming the file, line and word.
"""
from __future__ import annotations

import json
import operator
import os
from pathlib import Path
from typing import Optional, Sequence

from megatron_slm.corpus import lhotse_manifests
from megatron_slm.corpus.canonical import parse_canonical
from megatron_slm.corpus.textgrid import parse_textgrid
from megatron_slm.corpus.whisper import parse_whisper
from megatron_slm.corpus.words import Alignment, AlignmentError
from megatron_slm.jsonio import loads

_WORD_FIELDS = operator.itemgetter("word", "start", "end")


def detect_format(path: str | os.PathLike) -> str:
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
