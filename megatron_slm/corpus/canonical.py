"""Our alignment JSONL: one `{"id", "audio", "text", "words": [{"word", "start", "end"}]}` per line
(the format of examples/data/tiny_corpus/alignments.jsonl and of tools/align_words.py's output)."""
from __future__ import annotations

import os
from typing import Iterator

from megatron_slm import fields
from megatron_slm.corpus.words import Alignment, AlignmentError, from_word_dicts
from megatron_slm.jsonio import iter_jsonl


def parse_canonical(obj: object, where: str) -> Alignment:
    if not isinstance(obj, dict):
        raise AlignmentError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    for field in ("id", "words"):
        if field not in obj:
            raise AlignmentError(f"{where}: missing field {field!r}")
    if type(obj["id"]) is not str or not obj["id"]:
        raise AlignmentError(f"{where}: field 'id' must be a non-empty string, not {obj['id']!r}")
    return from_word_dicts(obj["id"], obj["words"], where)


def audio_entries(path: str | os.PathLike) -> list[tuple[str, str, str]]:
    """(id, audio path as written, file:line) of each record of a canonical alignments JSONL:
    what unit extraction needs from it. Raises AlignmentError naming the file:line and field (a
    line that is no object, a missing or non-string id/audio, an id seen on an earlier line)."""
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


def iter_alignments(path: str | os.PathLike) -> Iterator[dict]:
    """Records of an alignments.jsonl (one JSON object per line), with file:line on errors."""
    for where, rec in iter_jsonl(path):
        if not isinstance(rec, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(rec).__name__}")
        for field in ("id", "audio", "text", "words"):
            if field not in rec:
                raise ValueError(f"{where}: missing field {field!r}")
        yield rec
