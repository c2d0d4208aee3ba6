"""Units records + alignments -> prepared utterances, one record at a time or a shard at once.

`prepare_interleaved` is the reference: it validates one record and its alignment and raises a
`RecordError` naming the file:line, field and reason. `prepare_batch` gives the same result for a
whole shard with the per-record Python cut to reading fields: validation, units-in-time-range
and token lookup run as array operations over all records. A record that any vectorised check
rejects goes through `prepare_interleaved`, so skipped records get exactly its messages (and
a shard holding a record only the reference accepts is prepared by the reference).

`rule` is the compat rule set (megatron_slm/conventions.py) of what is prepared here: which unit runs
a word owns, and whether the first word keeps its leading space (slamkit) or not (none).
"""
from __future__ import annotations

from array import array
from typing import Any, Sequence

import numpy as np

from megatron_slm import conventions, document, fields
from megatron_slm.data import interleave
from megatron_slm.data.draws import document_key
from megatron_slm.corpus.alignments import AlignmentIndex
from megatron_slm.corpus.words import DURATION_TOLERANCE_S, AlignmentError, validate
from megatron_slm.data.ragged import segment_cumsum
from megatron_slm.data.records import RecordError
from megatron_slm.vocab import SpeechVocab

_INT, _NUMBER = {int}, (int, float)


def units_record(obj: dict, where: str, K: int):
    """(UnitRecord, units as int64) of a units JSON object, or RecordError('invalid_units')."""
    from megatron_slm.units.records import parse_record

    try:
        rec = parse_record(obj, where, num_units=K)
    except ValueError as e:
        raise RecordError(str(e), "invalid_units") from None
    if not rec.units:
        raise RecordError(f"{where}: utterance {rec.id!r} has no units", "invalid_units")
    return rec, np.asarray(rec.units, dtype=np.int64)


def prepare_interleaved(obj: dict, where: str, vocab: SpeechVocab, align: AlignmentIndex, rule: str = conventions.NONE
                        ) -> tuple[interleave.PreparedUtterance, Any]:
    """One units record + its alignment -> (PreparedUtterance, UnitRecord); RecordError if unusable."""
    rec, units = units_record(obj, where, vocab.num_units)
    n_q = vocab.inventory.num_codebooks  # a codec's frame: n_q ids in codebook order
    if rec.codebooks != n_q:
        raise RecordError(f"{where}: utterance {rec.id!r} has {rec.codebooks} codebook(s) per frame but the "
                          f"vocabulary's units have {n_q}", "invalid_units")
    if n_q > 1:
        from megatron_slm.vocab import VocabError

        try:
            vocab.inventory.unflatten(units)
        except VocabError as e:
            raise RecordError(f"{where}: field 'units': {e}", "invalid_units") from None
    if rec.id not in align:
        raise RecordError(f"{where}: utterance {rec.id!r} has no alignment in {align.path}", "no_alignment")
    try:
        al = validate(align.get(rec.id), rec.audio_seconds)
    except AlignmentError as e:
        raise RecordError(str(e), e.reason) from None
    ids, owner = vocab.encode_words_flat(al.words, first_spaced=document.first_word_spaced(rule))
    lo, hi = interleave.word_unit_ranges(al.starts, al.ends, np.asarray(rec.durations), rec.unit_seconds, rule)
    # durations count frames: a word owns whole frames, n_q ids each
    return interleave.prepare_flat(document_key(rec.id), ids, owner, vocab.unit_ids(units), lo * n_q, hi * n_q), rec


class _Columns:
    """Fields of the records that passed the per-record reading, as flat typed arrays."""

    def __init__(self) -> None:
        self.index: list[int] = []            # position of the record in the shard
        self.ids: list[str] = []
        self.units, self.durations = array("q"), array("q")
        self.n_units: list[int] = []
        self.num_frames: list[int] = []
        self.unit_seconds: list[float] = []
        self.audio_seconds: list[float] = []
        self.words: list[str] = []
        self.starts, self.ends = array("d"), array("d")
        self.n_words: list[int] = []

    def add(self, i: int, obj: dict, align: AlignmentIndex, raw: bytes | None = None) -> None:
        """Read one record; a missing field or a value of an unexpected type raises, before
        anything is appended (the caller then hands the record to the reference path).

        `array("q")` refuses floats and strings but takes JSON booleans as 0/1, so a record
        whose line (`raw`) holds a `true`/`false` literal -- or any record when the line is not
        known -- has its integer lists type-checked; the rest skip that per-element scan."""
        if raw is not None and (b"true" in raw or b"false" in raw):
            raise ValueError  # a boolean somewhere: the reference path names the field (or accepts)
        units, durations = obj["units"], obj["durations"]
        if raw is None and not (set(map(type, units)) <= _INT and set(map(type, durations)) <= _INT):
            raise ValueError
        units, durations = array("q", units), array("q", durations)
        names, starts, ends = align.word_fields(obj["id"])  # no words: ValueError
        names = [w.strip() for w in names]
        starts, ends = array("d", starts), array("d", ends)
        uid, nf, us, secs = obj["id"], obj["num_frames"], obj["unit_seconds"], obj["audio_seconds"]
        if not (names and all(names) and len(durations) == len(units) and type(uid) is str and uid.strip()
                and type(nf) is int and type(us) in _NUMBER and type(secs) in _NUMBER and type(obj["path"]) is str):
            raise ValueError  # empty word, length mismatch, odd types: the reference path decides
        us, secs = float(us), float(secs)  # an int beyond the float range raises here
        self.index.append(i)
        self.ids.append(uid)
        self.n_units.append(len(units))
        self.num_frames.append(nf)
        self.unit_seconds.append(us)
        self.audio_seconds.append(secs)
        self.units += units
        self.durations += durations
        self.words += names
        self.starts += starts
        self.ends += ends
        self.n_words.append(len(names))


def _bad_records(c: _Columns, K: int) -> tuple[np.ndarray, dict]:
    """Per record: does any vectorised check fail? Plus the arrays the checks built."""
    R = len(c.index)
    n_units, n_words = np.asarray(c.n_units, np.int64), np.asarray(c.n_words, np.int64)
    useg, wseg = np.repeat(np.arange(R), n_units), np.repeat(np.arange(R), n_words)
    units, durations = np.frombuffer(c.units, dtype=np.int64), np.frombuffer(c.durations, dtype=np.int64)
    starts, ends = np.frombuffer(c.starts, dtype=np.float64), np.frombuffer(c.ends, dtype=np.float64)
    audio = np.asarray(c.audio_seconds, dtype=np.float64)
    us, frames = np.asarray(c.unit_seconds, np.float64), np.asarray(c.num_frames, np.float64)
    bad = (n_units == 0) | (np.bincount(useg, weights=durations, minlength=R) != frames)
    bad |= ~(np.isfinite(us) & (us > 0)) | ~(np.isfinite(audio) & (audio >= 0)) | (frames >= fields.INT64_END)
    bad |= np.bincount(useg, weights=(units < 0) | (units >= K) | (durations < 1), minlength=R) > 0
    word_bad = ~(np.isfinite(starts) & np.isfinite(ends)) | (starts < 0) | (starts > ends)
    word_bad |= ends > audio[wseg] + DURATION_TOLERANCE_S
    first = np.r_[True, wseg[1:] != wseg[:-1]] if len(wseg) else np.zeros(0, bool)
    word_bad[1:] |= ~first[1:] & (starts[1:] < ends[:-1] - 1e-6)
    bad |= np.bincount(wseg, weights=word_bad, minlength=R) > 0
    return bad, dict(useg=useg, wseg=wseg, units=units, durations=durations, starts=starts, ends=ends,
                     n_units=n_units, n_words=n_words)


def _first_frame_at(times: np.ndarray, T: np.ndarray, strict: bool) -> np.ndarray:
    """Smallest integer c >= 0 with c * T >= times (strict: > times), the product rounded exactly
    as SlamKit's float64 `cumsum(durations) * T`: x / T is off by at most one, then corrected."""
    c = np.maximum(np.ceil(times / T), 0.0)
    for _ in range(3):
        below = (c * T > times) if strict else (c * T >= times)
        c = np.where(~below, c + 1, c)                       # c too small
        prev = np.maximum(c - 1, 0.0)
        prev_ok = (prev * T > times) if strict else (prev * T >= times)
        c = np.where((c > 0) & prev_ok, prev, c)             # c - 1 already qualifies
    return np.minimum(c, 2.0 ** 33 - 1).astype(np.int64)


def _word_unit_ranges(a: dict, unit_seconds: np.ndarray, rule: str = conventions.NONE) -> tuple[np.ndarray, np.ndarray]:
    """`interleave.word_unit_ranges` for all records at once: a search in record-tagged sorted keys."""
    useg, wseg = a["useg"], a["wseg"]
    run_end = segment_cumsum(a["durations"], useg)
    run_start = run_end - a["durations"]
    T = unit_seconds[wseg]
    tag_u, tag_w = useg << 33, wseg << 33
    unit_first = (np.cumsum(a["n_units"]) - a["n_units"])[wseg]
    if rule == conventions.SLAMKIT:
        # runs whose end time run_end * T is >= start (bisect_left) / <= end (bisect_right), i.e.
        # whose integer run_end lies below the first frame count past the time: exact integer keys
        lo = np.searchsorted(tag_u + run_end, tag_w + _first_frame_at(a["starts"], T, strict=False), side="left")
        hi = np.searchsorted(tag_u + run_end, tag_w + _first_frame_at(a["ends"], T, strict=True), side="left")
        return lo - unit_first, hi - unit_first
    f_lo = np.ceil(a["starts"] / T - 0.5 - 1e-9).astype(np.int64)
    f_hi = np.floor(a["ends"] / T - 0.5 + 1e-9).astype(np.int64)
    # key = record * 2^33 + frame + 1: sorted across records, since frames lie in [-1, 2^32)
    lo = np.searchsorted(tag_u + run_end + 1, tag_w + f_lo + 1, side="right") - unit_first
    hi = np.searchsorted(tag_u + run_start + 1, tag_w + f_hi + 1, side="right") - unit_first
    return lo, hi


def prepare_batch(records: list[tuple[str, dict]], vocab: SpeechVocab, align: AlignmentIndex, rule: str = conventions.NONE,
                  lines: Sequence[bytes] | None = None
                  ) -> tuple[list[int], interleave.PreparedBatch, np.ndarray, list[tuple[int, RecordError]]]:
    """(positions of the usable records, their PreparedBatch, their audio seconds, [(position,
    RecordError)] of the others) for a shard's decoded units records, in input order. `lines`:
    the raw JSON line of each record, which lets records without boolean literals skip a type
    scan (`_Columns.add`)."""
    cols = _Columns()
    slow: list[int] = []
    for i, (where, obj) in enumerate(records):
        try:
            cols.add(i, obj, align, lines[i] if lines is not None else None)
        except Exception:  # anything unusual: the reference path decides, with its message
            slow.append(i)
    bad, arrays = _bad_records(cols, vocab.num_units) if cols.index else (np.zeros(0, bool), None)
    if bad.any():
        slow += [cols.index[r] for r in np.flatnonzero(bad)]
    errors: list[tuple[int, RecordError]] = []
    for i in sorted(slow):
        where, obj = records[i]
        try:
            prepare_interleaved(obj, where, vocab, align, rule)
        except RecordError as e:
            errors.append((i, e))
            continue
        # rare: a record only the reference accepts (e.g. float unit ids): the shard takes its path
        return reference_batch(records, vocab, align, rule)
    good = ~bad
    if not good.any():
        return [], interleave.PreparedBatch.from_utterances([]), np.zeros(0), errors
    kept = [p for p, g in zip(cols.index, good.tolist()) if g]
    return kept, _fast_batch(cols, arrays, good, vocab, rule), np.asarray(cols.audio_seconds, np.float64)[good], errors


def reference_batch(records: list[tuple[str, dict]], vocab: SpeechVocab, align: AlignmentIndex, rule: str = conventions.NONE
                    ) -> tuple[list[int], interleave.PreparedBatch, np.ndarray, list[tuple[int, RecordError]]]:
    """`prepare_batch` through the per-record reference, record by record."""
    kept, utts, secs, errors = [], [], [], []
    for i, (where, obj) in enumerate(records):
        try:
            u, rec = prepare_interleaved(obj, where, vocab, align, rule)
        except RecordError as e:
            errors.append((i, e))
            continue
        kept.append(i)
        utts.append(u)
        secs.append(float(rec.audio_seconds))
    return kept, interleave.PreparedBatch.from_utterances(utts), np.asarray(secs, np.float64), errors


def _fast_batch(c: _Columns, a: dict, good: np.ndarray, vocab: SpeechVocab, rule: str) -> interleave.PreparedBatch:
    # ranges of the rejected records are discarded: a harmless frame length keeps the arithmetic quiet
    lo, hi = _word_unit_ranges(a, np.where(good, np.asarray(c.unit_seconds, np.float64), 1.0), rule)
    keep_w, keep_u = good[a["wseg"]], good[a["useg"]]
    n_words, n_units = a["n_words"][good], a["n_units"][good]
    word_starts = np.r_[0, np.cumsum(n_words)]
    words = c.words if good.all() else [w for w, k in zip(c.words, keep_w.tolist()) if k]
    text_ids, tok_counts = vocab.encode_word_lists(words, word_starts, first_spaced=document.first_word_spaced(rule))
    # per document: text ids ++ unit ids
    text_len = np.add.reduceat(tok_counts, word_starts[:-1]) if len(tok_counts) else np.zeros(0, np.int64)
    layout_lens = text_len + n_units
    unit_ids = vocab.unit_offset + a["units"][keep_u]
    doc_start = np.r_[0, np.cumsum(layout_lens)[:-1]]
    layout = np.empty(int(layout_lens.sum()), dtype=np.int64)
    text_dst = np.repeat(doc_start - (np.cumsum(text_len) - text_len), text_len) + np.arange(int(text_len.sum()))
    unit_dst = (np.repeat(doc_start + text_len - (np.cumsum(n_units) - n_units), n_units)
                + np.arange(int(n_units.sum())))
    layout[text_dst], layout[unit_dst] = text_ids, unit_ids
    keys = np.fromiter((document_key(uid) for uid, g in zip(c.ids, good.tolist()) if g), dtype=np.int64)
    return interleave.PreparedBatch.from_flat(keys, n_words, tok_counts, lo[keep_w], hi[keep_w], layout, layout_lens)
