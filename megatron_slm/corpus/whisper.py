"""Whisper-style word timestamps: a directory of `<id>.json` files with `segments[].words[]`
(openai-whisper) or `word_segments[]` (WhisperX)."""
from __future__ import annotations

from megatron_slm.corpus.words import Alignment, AlignmentError, from_word_dicts


def parse_whisper(obj: object, uid: str, where: str) -> Alignment:
    if not isinstance(obj, dict):
        raise AlignmentError(f"{where}: expected a JSON object")
    if isinstance(obj.get("word_segments"), list):  # WhisperX
        words = obj["word_segments"]
    elif isinstance(obj.get("segments"), list):
        words = [w for seg in obj["segments"] for w in ((seg.get("words") if isinstance(seg, dict) else None) or [])]
    else:
        raise AlignmentError(f"{where}: no 'segments[].words' nor 'word_segments' (word timestamps missing?)")
    return from_word_dicts(uid, words, where)
