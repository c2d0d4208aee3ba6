"""Reading messy line-oriented inputs and counting what was skipped, and why.

Each input line is parsed on its own: a bad line becomes a `Skip(reason, message)` that the
caller counts (or raises with `--strict`), never a silently changed result.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterator

from megatron_slm.jsonio import loads

# why a record can be skipped; the sidecar and the CLI summary list these counts
REASONS = {
    "non_utf8": "line is not valid UTF-8",
    "malformed_json": "line is not a JSON object",
    "invalid_units": "units record malformed or units outside [0, K)",
    "invalid_alignment": "alignment malformed (times, order, fields)",
    "outside_audio": "a word ends after the audio",
    "empty_transcript": "no words / empty text",
    "no_alignment": "units without an alignment",
    "no_units": "alignment without units",
    "duplicate_id": "utterance id seen before (first kept)",
    "missing_text_key": "text field absent or not a string",
    "no_supervision": "Lhotse cut without supervisions",
    "no_word_alignment": "Lhotse supervision without alignment['word']",
    "unsupported_cut": "Lhotse cut type without word alignments (e.g. a MixedCut)",
}

MAX_EXAMPLES = 5


class RecordError(ValueError):
    """One input record cannot be used; `reason` is a key of REASONS."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class SkipLog:
    counts: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def add(self, reason: str, message: str) -> None:
        self.counts[reason] += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(message)

    def merge(self, other: "SkipLog | dict") -> None:
        counts = other.counts if isinstance(other, SkipLog) else other["counts"]
        examples = other.examples if isinstance(other, SkipLog) else other["examples"]
        self.counts.update(counts)
        self.examples.extend(examples[: MAX_EXAMPLES - len(self.examples)])

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict:
        return {"counts": dict(sorted(self.counts.items())), "examples": list(self.examples)}


def decode_json_line(raw: bytes, where: str) -> Any:
    """bytes of one line -> JSON object, or RecordError naming `where` (file:line)."""
    try:
        obj = loads(raw)  # validates UTF-8 itself: the common case decodes nothing twice
    except json.JSONDecodeError:
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise RecordError(f"{where}: not UTF-8 (byte {e.start})", "non_utf8") from None
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise RecordError(f"{where}: not JSON ({e.msg} at column {e.colno})", "malformed_json") from None
    if not isinstance(obj, dict):
        raise RecordError(f"{where}: expected a JSON object, got {type(obj).__name__}", "malformed_json")
    return obj


def count_lines(paths: list[str]) -> int:
    n = 0
    for p in paths:
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                n += block.count(b"\n")
    return n


def iter_lines(path) -> Iterator[tuple[str, bytes]]:
    """(`file:line`, raw bytes) of each non-blank line of a JSONL file: the `where` every message names."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if raw.strip():
                yield f"{path}:{lineno}", raw


def iter_line_shards(paths: list[str], shard_lines: int) -> Iterator[tuple[int, list[tuple[str, bytes]]]]:
    """(shard index, [(where, raw line)]) over the non-blank lines of all files in order. Shards
    depend only on the inputs, never on the number of workers."""
    shard: list[tuple[str, bytes]] = []
    index = 0
    for p in paths:
        for line in iter_lines(p):
            shard.append(line)
            if len(shard) == shard_lines:
                yield index, shard
                index, shard = index + 1, []
    if shard:
        yield index, shard


def file_fingerprint(paths: list[str]) -> list[list]:
    """(path, size, mtime) of each input: resume only when nothing changed."""
    return [[os.path.abspath(p), os.path.getsize(p), int(os.path.getmtime(p))] for p in paths]
