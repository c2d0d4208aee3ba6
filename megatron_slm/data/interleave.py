"""Interleaving speech and text over aligned words: prepared utterances, drawn runs, assembly.

An utterance is prepared once (`prepare`): per-word text token ids (each word with its leading
space, see document.first_word_spaced) and, per word, the range of deduplicated unit runs inside
its time span (`word_unit_ranges`). A draw (spans.py: which words are spoken, counter-based so
static preprocessing and the dynamic dataset draw the same document for the same epoch) is cut
into maximal modality runs, and the runs are laid out as a training document by document.py:

    [BOS] <text> w0 w1 <speech> u.. u.. <text> w4 ... EOD

`PreparedBatch` / `draw_batch` / `assemble_batch` do the same for many documents at once with
array operations; `assemble` is the one-document reference. The conventions
(megatron_slm/conventions.py) differ here in which unit runs a span owns -- slamkit: the runs
whose END time (cumsum(durations) * unit_seconds) lies in [start_i, end_j] (SlamKit's bisect);
none: the runs with a frame centre inside -- and in whether a speech span without units keeps
its marker (document.keep_empty_speech).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from megatron_slm import conventions, document
from megatron_slm.config import InterleaveConfig
from megatron_slm.data.ragged import segment_cumsum
from megatron_slm.data.spans import select_speech_words, speech_masks


def runs(mask: np.ndarray) -> list[tuple[int, int, bool]]:
    """[(start, end, is_speech)] maximal runs of equal mask values."""
    n = len(mask)
    if n == 0:
        return []
    bounds = [0] + (np.flatnonzero(mask[1:] != mask[:-1]) + 1).tolist() + [n]
    first = bool(mask[0])
    return [(bounds[r], bounds[r + 1], first != bool(r & 1)) for r in range(len(bounds) - 1)]


# ----------------------------------------------------------------------------- units in time


def word_unit_ranges(starts: np.ndarray, ends: np.ndarray, durations: np.ndarray, unit_seconds: float,
                     rule: str = conventions.NONE) -> tuple[np.ndarray, np.ndarray]:
    """Per word, unit runs [lo, hi); a span of words i..j owns runs [lo[i], hi[j]).
    slamkit: runs whose end time cumsum(durations) * unit_seconds lies in [start, end] (SlamKit's
    bisect_left / bisect_right on those times); none: runs with a frame centre inside
    [start, end] -- every run overlapping the span's frame range."""
    if rule == conventions.SLAMKIT:
        end_times = np.cumsum(np.asarray(durations, dtype=np.int64)) * float(unit_seconds)
        return (np.searchsorted(end_times, np.asarray(starts, dtype=np.float64), side="left").astype(np.int64),
                np.searchsorted(end_times, np.asarray(ends, dtype=np.float64), side="right").astype(np.int64))
    run_end = np.cumsum(np.asarray(durations, dtype=np.int64))
    run_start = run_end - np.asarray(durations, dtype=np.int64)
    # frame f has centre (f + 0.5) * T; the small epsilon keeps exact boundaries inclusive
    f_lo = np.ceil(np.asarray(starts) / unit_seconds - 0.5 - 1e-9).astype(np.int64)
    f_hi = np.floor(np.asarray(ends) / unit_seconds - 0.5 + 1e-9).astype(np.int64)
    lo = np.searchsorted(run_end, f_lo, side="right")
    hi = np.searchsorted(run_start, f_hi, side="right")
    return lo.astype(np.int64), hi.astype(np.int64)


@dataclasses.dataclass
class PreparedUtterance:
    """Everything a draw needs, stored once per utterance (also the dynamic-mode record)."""
    key: int
    text_ids: np.ndarray      # all words' text tokens, concatenated (int64)
    tok_offsets: np.ndarray   # n+1 offsets of each word's tokens into text_ids
    unit_ids: np.ndarray      # vocabulary ids of the unit runs (int64)
    lo: np.ndarray            # per word: first unit run of the word (index into unit_ids)
    hi: np.ndarray            # per word: one past its last unit run

    @property
    def num_words(self) -> int:
        return len(self.lo)


def prepare(key: int, word_token_ids: list[list[int]], unit_ids: np.ndarray, lo: np.ndarray, hi: np.ndarray
            ) -> PreparedUtterance:
    n = len(word_token_ids)
    owner = np.repeat(np.arange(n), [len(t) for t in word_token_ids])
    flat = np.fromiter((t for w in word_token_ids for t in w), dtype=np.int64, count=len(owner))
    return prepare_flat(key, flat, owner, unit_ids, lo, hi)


def prepare_flat(key: int, token_ids: np.ndarray, owner: np.ndarray, unit_ids: np.ndarray, lo: np.ndarray,
                 hi: np.ndarray) -> PreparedUtterance:
    """Like `prepare`, from all tokens and the (non-decreasing) word index of each token."""
    counts = np.bincount(owner, minlength=len(lo))
    offsets = np.concatenate(([0], np.cumsum(counts)))
    return PreparedUtterance(key, np.asarray(token_ids, dtype=np.int64), offsets, np.asarray(unit_ids, dtype=np.int64), lo, hi)


def effective_runs(u: PreparedUtterance, mask: np.ndarray, keep_empty: bool = False) -> list[tuple[int, int, bool]]:
    """Runs of the mask after turning speech spans without any unit into text, unless
    `keep_empty` (document.keep_empty_speech)."""
    segs = runs(mask)
    if keep_empty:
        return segs
    empty = [(a, b) for a, b, sp in segs if sp and u.hi[b - 1] <= u.lo[a]]
    if not empty:
        return segs
    mask = mask.copy()
    for a, b in empty:
        mask[a:b] = False
    return runs(mask)


def assemble(u: PreparedUtterance, mask: np.ndarray, mk: document.Markers, keep_empty: bool = False) -> np.ndarray:
    """One document, run by run (the reference of `assemble_batch`)."""
    segments = [document.ids(document.SPEECH, u.unit_ids[u.lo[a]:max(u.hi[b - 1], u.lo[a])]) if speech
                else document.ids(document.TEXT, u.text_ids[u.tok_offsets[a]:u.tok_offsets[b]])
                for a, b, speech in effective_runs(u, mask, keep_empty)]
    return document.training_document(segments, mk, interleaved=True)


def draw(u: PreparedUtterance, cfg: InterleaveConfig, seed: int, epoch: int) -> np.ndarray:
    """The speech mask of utterance `u` for (seed, epoch)."""
    return select_speech_words(u.num_words, u.key, cfg, seed, epoch)


# ----------------------------------------------------------------------------- many documents at once


@dataclasses.dataclass
class PreparedBatch:
    """Many prepared utterances in flat arrays. Word w's text tokens are layout[tok_start[w]:
    tok_end[w]] and its unit runs layout[unit_lo[w]:unit_hi[w]] (indices into `layout`, which
    holds each document's text ids ++ unit ids); document d owns words [word_starts[d],
    word_starts[d+1])."""
    keys: np.ndarray
    word_starts: np.ndarray
    tok_start: np.ndarray
    tok_end: np.ndarray
    unit_lo: np.ndarray
    unit_hi: np.ndarray
    layout: np.ndarray
    layout_starts: np.ndarray  # document d's stored ids are layout[layout_starts[d]:layout_starts[d+1]]

    @property
    def num_words(self) -> np.ndarray:
        return np.diff(self.word_starts)

    @classmethod
    def from_flat(cls, keys: np.ndarray, n_words: np.ndarray, tok_counts: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                  layout: np.ndarray, layout_lens: np.ndarray) -> "PreparedBatch":
        """From the dynamic storage format, flattened: per document its stored layout (text ids ++
        unit ids, concatenated in `layout`) and per word its token count and unit range [lo, hi)
        relative to the document's unit part."""
        n = np.asarray(n_words, dtype=np.int64)
        tok_counts = np.asarray(tok_counts, dtype=np.int64)
        seg = np.repeat(np.arange(len(n)), n)
        layout_starts = np.r_[0, np.cumsum(layout_lens, dtype=np.int64)]
        tok_end = segment_cumsum(tok_counts, seg) + layout_starts[:-1][seg]
        text_len = np.bincount(seg, weights=tok_counts, minlength=len(n)).astype(np.int64)
        unit_base = (layout_starts[:-1] + text_len)[seg]
        return cls(np.asarray(keys, dtype=np.int64), np.r_[0, np.cumsum(n)], tok_end - tok_counts, tok_end,
                   np.asarray(lo, dtype=np.int64) + unit_base, np.asarray(hi, dtype=np.int64) + unit_base,
                   np.asarray(layout, dtype=np.int64), layout_starts)

    @classmethod
    def from_utterances(cls, utts: list[PreparedUtterance]) -> "PreparedBatch":
        if not utts:
            e = np.zeros(0, np.int64)
            return cls.from_flat(e, e, e, e, e, e, e)
        parts = [a for u in utts for a in (u.text_ids, u.unit_ids)]
        return cls.from_flat(np.fromiter((u.key for u in utts), dtype=np.int64, count=len(utts)),
                             np.fromiter((len(u.lo) for u in utts), dtype=np.int64, count=len(utts)),
                             np.concatenate([np.diff(u.tok_offsets) for u in utts]),
                             np.concatenate([u.lo for u in utts]), np.concatenate([u.hi for u in utts]),
                             np.concatenate(parts), np.fromiter(map(len, parts), dtype=np.int64).reshape(-1, 2).sum(1))


@dataclasses.dataclass
class Runs:
    """The modality runs of a batch's draw: document d has runs [offsets[d], offsets[d+1]); run r
    copies layout[src[r]:src[r]+length[r]] after its marker (speech[r]: <speech>, else <text>)."""
    offsets: np.ndarray
    src: np.ndarray
    length: np.ndarray
    speech: np.ndarray


def batch_runs(b: PreparedBatch, masks: np.ndarray, keep_empty: bool = False) -> Runs:
    """Maximal runs of each document's mask, after turning speech spans without any unit into
    text (merged with their text neighbours) unless `keep_empty`, as in `effective_runs`."""
    W = len(masks)
    doc_first = b.word_starts[:-1][b.num_words > 0]
    for _ in range(1 if keep_empty else 2):
        new = np.ones(W, dtype=bool)
        new[1:] = masks[1:] != masks[:-1]
        new[doc_first] = True
        a = np.flatnonzero(new)
        last = np.r_[a[1:], W][:len(a)] - 1
        speech = masks[a]
        empty = speech & (b.unit_hi[last] <= b.unit_lo[a])
        if keep_empty or not empty.any():
            break
        edges = np.bincount(a[empty], minlength=W + 1) - np.bincount(last[empty] + 1, minlength=W + 1)
        masks = masks & ~(np.cumsum(edges[:W]) > 0)
    src = np.where(speech, b.unit_lo[a], b.tok_start[a])
    length = np.where(speech, np.maximum(b.unit_hi[last] - b.unit_lo[a], 0), b.tok_end[last] - b.tok_start[a])
    doc = np.searchsorted(b.word_starts, a, side="right") - 1
    offsets = np.r_[0, np.cumsum(np.bincount(doc, minlength=len(b.keys)))]
    return Runs(offsets, src, length, speech)


def draw_batch(b: PreparedBatch, cfg: InterleaveConfig, seed: int, epoch: int) -> Runs:
    return batch_runs(b, speech_masks(b.num_words, b.keys, cfg, seed, epoch), keep_empty=document.keep_empty_speech(cfg.compat))


def assemble_batch(b: PreparedBatch, runs: Runs, mk: document.Markers) -> tuple[np.ndarray, np.ndarray]:
    """`assemble` for every document of a batch at once: (ids concatenated, document offsets)."""
    return document.assemble_runs(b.layout, np.diff(runs.offsets), runs.src, runs.length, runs.speech, mk)
