"""Prompts: where they come from, how they are cut, and the token ids they become.

Four sources, each giving `Prompt`s (an id and a list of text/speech segments):

  units JSONL   records of tools/extract_units.py (`units`, `durations`, `unit_seconds`), with
                their identity sidecar `<file>.meta.json` (required: it says which extractor and
                k-means made the units)
  audio         files or directories, turned into units by the unit pipeline (UnitExtractor)
  text lines    one prompt per non-blank line (`<file stem>:<line>` ids)
  segment JSONL interleaved prompts, one per line:
                {"id": "p1", "segments": [{"text": "Once upon a time"}, {"units": [12, 7, 31]}]}
                units identity from `<file>.meta.json` (a units sidecar) when present

`--prompt-seconds N` keeps the first N seconds of a speech prompt. With word alignments the cut
is the end of the word ending closest to N seconds (SlamKit's rule), so a prompt never stops
mid-word; without, it is N seconds exactly. The cut applies to the units of the whole utterance
(a unit is kept when it ends by the cut), so a prompt's units are exactly the units the model saw
for that stretch in training -- re-extracting a cut waveform could give others (the mel
extractor normalises per utterance).

A prompt is laid out like a training document (`encode_prompt`): BOS, then for a one-modality
prompt continued in the same modality the bare ids (speech-only and text-only documents have no
marker); otherwise a modality marker at the start and at every switch, and the output modality's
marker at the end when the continuation is in the other modality. A text segment after speech
keeps its leading space, as words do in interleaved documents.

Corrupt records (not JSON, missing or mistyped fields, unreadable audio) are skipped and counted
(`PromptSet.skipped`); settings errors (units >= K, an identity other than the model's, an empty
prompt) raise GenerationError naming the file, line and field.
"""
from __future__ import annotations

import bisect
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

from megatron_slm import document
from megatron_slm.document import SPEECH, TEXT
from megatron_slm.data.records import RecordError, SkipLog, decode_json_line, iter_lines
from megatron_slm.generate.sampling import GenerationError


@dataclass
class Segment:
    modality: str  # "speech" | "text"
    units: Optional[list[int]] = None
    text: Optional[str] = None

    def to_json(self) -> dict:
        return {"units": self.units} if self.modality == SPEECH else {"text": self.text}


@dataclass
class Prompt:
    id: str
    segments: list[Segment]
    where: str                       # "file:line" or the audio path, for messages
    seconds: Optional[float] = None  # where a speech prompt was cut (None: not cut)

    @property
    def modalities(self) -> list[str]:
        return [s.modality for s in self.segments]


@dataclass
class PromptSet:
    prompts: list[Prompt]
    source: str
    unit_identity: Optional[dict] = None  # compatibility key of the prompts' units (None: text only / unknown)
    skipped: SkipLog = field(default_factory=SkipLog)

    @property
    def has_units(self) -> bool:
        return any(s.modality == SPEECH for p in self.prompts for s in p.segments)


# --------------------------------------------------------------------------- cutting


def cut_units(units: Sequence[int], durations: Sequence[int], unit_seconds: float, seconds: float,
              word_ends: Optional[Sequence[float]] = None, codebooks: int = 1) -> tuple[list[int], float]:
    """The units of the first `seconds` (at the closest word end when `word_ends` are given):
    runs whose end time is at most the cut; codec frames (`codebooks` ids each) stay whole.
    Returns (units, cut time)."""
    cut = float(seconds)
    if word_ends is not None and len(word_ends):
        ends_w = np.asarray(word_ends, dtype=np.float64)
        cut = float(ends_w[np.abs(ends_w - seconds).argmin()])
    ends = np.cumsum(np.asarray(durations, dtype=np.int64)) * float(unit_seconds)
    n = bisect.bisect_right(ends.tolist(), cut + 1e-9)
    return list(units[:n * codebooks]), cut


# --------------------------------------------------------------------------- readers


def _segment_from_json(obj, where: str, i: int) -> Segment:
    if not isinstance(obj, dict):
        raise RecordError(f"{where}: segments[{i}] must be an object with 'text' or 'units'", "invalid_prompt")
    declared = obj.get("modality")
    if declared is not None and declared not in (SPEECH, TEXT):
        raise GenerationError(f"{where}: segments[{i}].modality is {declared!r}; a segment is 'speech' or 'text'")
    if ("units" in obj) == ("text" in obj):
        raise RecordError(f"{where}: segments[{i}] needs exactly one of 'text' or 'units'", "invalid_prompt")
    if "units" in obj:
        u = obj["units"]
        if not isinstance(u, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in u):
            raise RecordError(f"{where}: segments[{i}].units must be a list of integers", "invalid_units")
        if declared == TEXT:
            raise GenerationError(f"{where}: segments[{i}] declares modality 'text' but holds units")
        return Segment(SPEECH, units=list(u))
    t = obj["text"]
    if not isinstance(t, str):
        raise RecordError(f"{where}: segments[{i}].text must be a string", "invalid_prompt")
    if declared == SPEECH:
        raise GenerationError(f"{where}: segments[{i}] declares modality 'speech' but holds text")
    return Segment(TEXT, text=t)


def _iter_json_lines(path: str, skipped: SkipLog) -> Iterable[tuple[str, dict]]:
    for where, raw in iter_lines(path):
        try:
            yield where, decode_json_line(raw, where)
        except RecordError as e:
            skipped.add(e.reason, str(e))


def _first_object(path: str) -> Optional[dict]:
    skip = SkipLog()
    for _, obj in _iter_json_lines(path, skip):
        return obj
    return None


def detect_jsonl_kind(path: str) -> str:
    """'units' (extract_units records) or 'segments' (interleaved prompts), from the first record."""
    obj = _first_object(path)
    if obj is None:
        raise GenerationError(f"{path}: no JSON records (an empty prompt file)")
    if "segments" in obj:
        return "segments"
    if "units" in obj and "durations" in obj:
        return "units"
    raise GenerationError(f"{path}: first record has neither 'segments' (interleaved prompts) nor "
                          "'units' + 'durations' (a units file of tools/extract_units.py)")


def _sidecar_identity(path: str, required: bool) -> Optional[dict]:
    from megatron_slm.units.records import compatibility_key, meta_path, read_meta

    if not required and not os.path.isfile(meta_path(path)):
        return None
    try:
        return compatibility_key(read_meta(path))
    except (FileNotFoundError, ValueError, KeyError) as e:
        raise GenerationError(f"{e}" if isinstance(e, FileNotFoundError) else
                              f"{meta_path(path)}: not a readable units sidecar ({e})") from None


def read_unit_prompts(path: str, seconds: Optional[float] = None, alignments=None) -> PromptSet:
    """Units JSONL (+ sidecar). `alignments`: an AlignmentIndex (word ends for the cut) or None."""
    from megatron_slm.units.records import parse_record

    out = PromptSet([], path, _sidecar_identity(path, required=True))
    seen: set[str] = set()
    for where, obj in _iter_json_lines(path, out.skipped):
        try:
            rec = parse_record(obj, where)
            if not isinstance(rec.id, str) or not rec.id:
                raise ValueError(f"{where}: field 'id' must be a non-empty string")
            if not all(isinstance(u, int) and not isinstance(u, bool) for u in rec.units):
                raise ValueError(f"{where}: field 'units' must hold integers")
        except ValueError as e:
            out.skipped.add("invalid_units", str(e))
            continue
        if rec.id in seen:
            out.skipped.add("duplicate_id", f"{where}: utterance id {rec.id!r} appears again (first kept)")
            continue
        seen.add(rec.id)
        units, cut = list(rec.units), None
        if seconds is not None:
            units, cut = cut_units(rec.units, rec.durations, rec.unit_seconds, seconds,
                                   _word_ends(alignments, rec.id, out.skipped, where), rec.codebooks)
        out.prompts.append(Prompt(rec.id, [Segment(SPEECH, units=units)], where, cut))
    return out


def _word_ends(alignments, uid: str, skipped: SkipLog, where: str) -> Optional[list[float]]:
    if alignments is None:
        return None
    from megatron_slm.corpus.words import AlignmentError

    if uid not in alignments:
        skipped.add("no_alignment_cut", f"{where}: no alignment for {uid!r}; cut at the exact time instead")
        return None
    try:
        return alignments.get(uid).ends.tolist()
    except AlignmentError as e:
        skipped.add("no_alignment_cut", f"{e}; cut at the exact time instead")
        return None


def read_segment_prompts(path: str) -> PromptSet:
    out = PromptSet([], path, _sidecar_identity(path, required=False))
    seen: set[str] = set()
    for where, obj in _iter_json_lines(path, out.skipped):
        try:
            pid, segs = obj.get("id"), obj.get("segments")
            if not isinstance(pid, str) or not pid:
                raise RecordError(f"{where}: field 'id' must be a non-empty string", "invalid_prompt")
            if not isinstance(segs, list):
                raise RecordError(f"{where}: field 'segments' must be a list", "invalid_prompt")
            segments = [_segment_from_json(s, where, i) for i, s in enumerate(segs)]
        except RecordError as e:
            out.skipped.add(e.reason, str(e))
            continue
        if pid in seen:
            out.skipped.add("duplicate_id", f"{where}: prompt id {pid!r} appears again (first kept)")
            continue
        seen.add(pid)
        out.prompts.append(Prompt(pid, segments, where))
    return out


def read_text_prompts(path: str) -> PromptSet:
    out = PromptSet([], path)
    stem = Path(path).stem
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as e:
                out.skipped.add("non_utf8", f"{where}: not UTF-8 (byte {e.start})")
                continue
            if line.strip():
                out.prompts.append(Prompt(f"{stem}:{lineno}", [Segment(TEXT, text=line.strip())], where))
    return out


def read_audio_prompts(paths: Sequence[str], extractor, seconds: Optional[float] = None,
                       alignments=None) -> PromptSet:
    """Audio files/directories -> units with `extractor` (a units.pipeline.UnitExtractor);
    unreadable files are skipped and counted. Prompts come back in input order."""
    from megatron_slm.audio.sources import list_audio_files, utterance_id
    from megatron_slm.units.records import compatibility_key

    files: list[tuple[str, str]] = []
    for p in paths:
        if os.path.isdir(p):
            files += [(f, utterance_id(f, p)) for f in list_audio_files(p)]
        elif os.path.isfile(p):
            files.append((p, utterance_id(p)))
        elif os.path.exists(p):
            raise GenerationError(f"{p}: not a regular file or directory (a FIFO or device would block the reader)")
        else:
            raise GenerationError(f"{p}: no such audio file or directory")
    if not files:
        raise GenerationError(f"no audio files (.wav, .flac, .ogg) in {', '.join(paths)}")
    out = PromptSet([], ", ".join(paths), compatibility_key(extractor.meta))
    by_id = {}
    for rec in extractor.units_for_files([f for f, _ in files], [i for _, i in files]):
        units, cut = list(rec.units), None
        if seconds is not None:
            units, cut = cut_units(rec.units, rec.durations, rec.unit_seconds, seconds,
                                   _word_ends(alignments, rec.id, out.skipped, rec.path), rec.codebooks)
        by_id[rec.id] = Prompt(rec.id, [Segment(SPEECH, units=units)], rec.path, cut)
    for s in extractor.skipped:
        out.skipped.add("unreadable_audio", f"{s.path}: {s.reason}")
    for w in getattr(extractor, "warnings", []):  # kept: a silent prompt is valid, but rarely meant
        print(f"warning: prompt audio {w.path}: {w.reason}", file=sys.stderr)
    out.prompts = [by_id[i] for _, i in files if i in by_id]
    return out


def read_prompt_file(path: str, seconds: Optional[float] = None, alignments=None) -> PromptSet:
    """A units JSONL or a segment JSONL, told apart by the first record."""
    if not os.path.isfile(path):
        raise GenerationError(f"{path}: prompt file not found")
    if detect_jsonl_kind(path) == "units":
        return read_unit_prompts(path, seconds, alignments)
    if seconds is not None:
        raise GenerationError(f"{path}: --prompt-seconds applies to units files and audio, not to segment prompts")
    return read_segment_prompts(path)


def select(ps: PromptSet, ids: Optional[Sequence[str]] = None, limit: Optional[int] = None) -> PromptSet:
    """Keep the prompts named in `ids` (in that order; an unknown id is an error), then the first `limit`."""
    if ids:
        by_id = {p.id: p for p in ps.prompts}
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise GenerationError(f"{ps.source}: no prompt with id {missing[0]!r}"
                                  + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
        ps.prompts = [by_id[i] for i in ids]
    if limit is not None:
        ps.prompts = ps.prompts[:limit]
    return ps


# --------------------------------------------------------------------------- checks and ids


def check_unit_identity(ps: PromptSet, model_identity: Optional[dict], num_units: int) -> None:
    """Refuse prompts whose units come from another extractor/k-means than the model's."""
    if not ps.has_units:
        return
    from megatron_slm.unit_identity import check_unit_count, check_units

    check_unit_count(ps.unit_identity, num_units, ps.source, "the model vocabulary", error=GenerationError)
    check_units(ps.unit_identity, model_identity or None, ps.source, "the model", error=GenerationError)


def encode_prompt(prompt: Prompt, vocab, output: str) -> list[int]:
    """Token ids of `prompt` laid out like a training document by document.py (see the module
    docstring); `output` ("speech", "text" or "any") is the modality of the continuation."""
    if not prompt.segments:
        raise GenerationError(f"{prompt.where}: prompt {prompt.id!r} is empty (no segments)")
    segments: list[document.Segment] = []
    for i, seg in enumerate(prompt.segments):
        if seg.modality == SPEECH:
            if not seg.units:
                raise GenerationError(_empty(prompt, i, "has no units"))
            bad = [u for u in seg.units if not 0 <= u < vocab.num_units]
            if bad:
                raise GenerationError(f"{prompt.where}: prompt {prompt.id!r} segments[{i}].units holds unit {bad[0]}, "
                                      f"outside [0, {vocab.num_units}) of the model's vocabulary")
            segments.append(document.speech(vocab, seg.units))
        else:
            if not seg.text.strip():
                raise GenerationError(_empty(prompt, i, "has an empty text"))
            after_speech = bool(segments) and segments[-1].modality == document.SPEECH
            segments.append(document.text(vocab, seg.text, after_speech=after_speech))
            if not len(segments[-1].ids):
                raise GenerationError(_empty(prompt, i, f"text {seg.text!r} encodes to no tokens"))
    doc = document.layout(segments, document.Markers.of(vocab), next_modality=None if output == "any" else output)
    return doc.ids.tolist()


def _empty(prompt: Prompt, i: int, what: str) -> str:
    hint = (f" (cut at {prompt.seconds:.2f} s: try a larger --prompt-seconds)" if prompt.seconds is not None else "")
    return f"{prompt.where}: prompt {prompt.id!r} is empty: segments[{i}] {what}{hint}"
