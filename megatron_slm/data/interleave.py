"""Interleaving speech and text over aligned words: small pure functions.

An utterance is prepared once (`prepare`): per-word text token ids (each word after the first
with its leading space) and, per word, the range of deduplicated unit runs inside its time span.
A draw (`select_speech_words`) marks which words are spoken; `assemble` then emits

    [BOS] <text> w0 w1 <speech> u.. u.. <text> w4 ... [EOD]

with a modality marker at the start and at every switch. Two rule sets (`compat`, see
megatron_slm/conventions.py):

  slamkit  SlamKit's, which the released SIMS models were trained on: a speech span over words
           i..j covers the unit runs whose END time (cumsum(durations) * unit_seconds) lies in
           [start_i, end_j] (SlamKit's bisect); SlamKit's samplers (slamkit_sampling.py); every
           word carries its leading space; a speech span without units keeps its <speech> marker.
  none     the runs that have at least one frame whose centre lies in [start_i, end_j]; exact-eta
           poisson spans; the first word without a space; a unit-less speech span becomes text.

Draws are seeded by (seed, epoch, document key) so static preprocessing and the dynamic dataset
produce the same document for the same epoch.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import zlib
from typing import Optional

import numpy as np

from megatron_slm import conventions
from megatron_slm.config import InterleaveConfig


def document_key(utterance_id: str) -> int:
    """A stable 31-bit key for an utterance: seeds its draws independently of file order/workers."""
    return zlib.crc32(utterance_id.encode("utf-8")) & 0x7FFFFFFF


# ----------------------------------------------------------------------------- random numbers
#
# Draws are a pure function of (seed, epoch, document key, stream, counter): a splitmix64 hash
# turned into a uniform in [0, 1). Every document's draw is then independent of which batch,
# worker or file position it is drawn in, and all documents of a batch are drawn with array
# operations (a per-document Generator costs more than the whole vectorised draw).

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_U64 = (1 << 64) - 1


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64 arrays (wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def uniforms(seed: int, epoch: int, stream: int, keys: np.ndarray, counters: np.ndarray) -> np.ndarray:
    """float64 uniforms in [0, 1), one per (key, counter) pair, for (seed, epoch, stream)."""
    h = np.array([int(seed) & _U64], dtype=np.uint64)
    for v in (int(epoch) & _U64, int(stream) & _U64):
        h = _mix64((h + _GOLDEN) ^ np.array([v], dtype=np.uint64))
    x = _mix64(h ^ (np.asarray(keys).astype(np.uint64) * _GOLDEN))
    x = _mix64(x + (np.asarray(counters).astype(np.uint64) + np.uint64(1)) * _GOLDEN)
    return (x >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


@functools.lru_cache(maxsize=16)
def _poisson_cdf(lam: float) -> np.ndarray:
    k = np.arange(int(lam + 12.0 * math.sqrt(lam) + 20.0))
    log_pmf = k * math.log(lam) - lam - np.array([math.lgamma(i + 1.0) for i in k])
    return np.cumsum(np.exp(log_pmf))


def poisson_ppf(u: np.ndarray, lam: float) -> np.ndarray:
    """Poisson(lam) draws from uniforms by the inverse CDF (the tail past ~12 sd is cut)."""
    if lam <= 0:
        return np.zeros(len(u), dtype=np.int64)
    cdf = _poisson_cdf(float(lam))
    return np.minimum(np.searchsorted(cdf, u, side="right"), len(cdf) - 1).astype(np.int64)


# ----------------------------------------------------------------------------- segments


def _segments(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For consecutive segments of `counts` elements: (segment of each element, its position
    in the segment, the segments' start offsets)."""
    counts = np.asarray(counts, dtype=np.int64)
    starts = np.cumsum(counts) - counts
    seg = np.repeat(np.arange(len(counts)), counts)
    return seg, np.arange(int(counts.sum())) - starts[seg], starts


def _segment_cumsum(values: np.ndarray, seg: np.ndarray) -> np.ndarray:
    """Inclusive cumulative sum restarting at every segment (`seg` sorted)."""
    c = np.cumsum(values)
    first = np.flatnonzero(np.r_[True, seg[1:] != seg[:-1]]) if len(seg) else np.zeros(0, np.int64)
    before = np.repeat(c[first] - values[first], np.diff(np.r_[first, len(seg)]))
    return c - before


# ----------------------------------------------------------------------------- span selection
# Each method returns spans (document, first word, number of words), sorted by document and
# start, non-overlapping and never adjacent; `speech_masks` turns them into word masks.


def _poisson_spans(n: np.ndarray, keys: np.ndarray, seed: int, epoch: int, mean_span: float, fraction: float):
    """E[#speech words] = fraction*n exactly (stochastic rounding), cut into spans of
    1+Poisson(mean_span-1) words (the last cut to fit), placed in distinct random gaps between
    text words (so every span stays visible) in random order."""
    target = fraction * n
    m = np.minimum(np.floor(target).astype(np.int64)
                   + (uniforms(seed, epoch, 0, keys, np.zeros_like(keys)) < target - np.floor(target)), n)
    docs = np.arange(len(n))
    full = (m >= n) & (n > 0)
    active = (m > 0) & (m < n)
    # span lengths until they cover m words (at most m draws per document)
    seg, j, _ = _segments(np.where(active, m, 0))
    lengths = 1 + poisson_ppf(uniforms(seed, epoch, 1, keys[seg], j), max(mean_span - 1.0, 0.0))
    cum = _segment_cumsum(lengths, seg)
    keep = cum - lengths < m[seg]
    seg, j, lengths, cum = seg[keep], j[keep], lengths[keep], cum[keep]
    lengths = lengths - np.maximum(cum - m[seg], 0)
    # k spans need k distinct gaps among the n-m+1 around text words: merge the surplus
    gaps = n - m + 1
    j = np.minimum(j, gaps[seg] - 1)
    if len(seg):
        first = np.flatnonzero(np.r_[True, (seg[1:] != seg[:-1]) | (j[1:] != j[:-1])])
        lengths, seg, j = np.add.reduceat(lengths, first), seg[first], j[first]
    k = np.bincount(seg, minlength=len(n))
    # (document + u/2 sorts by document, then by u, and never rounds up into the next document)
    lengths = lengths[np.argsort(seg + 0.5 * uniforms(seed, epoch, 2, keys[seg], j))]  # random order
    # the k gaps with the smallest random keys, in increasing order
    gseg, g, gstart = _segments(np.where(k > 0, gaps, 0))
    order = np.argsort(gseg + 0.5 * uniforms(seed, epoch, 3, keys[gseg], g))
    chosen = np.sort(order[(np.arange(len(order)) - gstart[gseg[order]]) < k[gseg[order]]])
    slots = g[chosen]
    # gap s = "after s text words": a span starts after its gap's text words and the earlier spans
    starts = slots + _segment_cumsum(lengths, seg) - lengths
    seg = np.concatenate([seg, docs[full]])
    starts = np.concatenate([starts, np.zeros(int(full.sum()), np.int64)])
    lengths = np.concatenate([lengths, n[full]])
    order = np.lexsort((starts, seg))
    return seg[order], starts[order], lengths[order]


def _span_spans(n: np.ndarray, keys: np.ndarray, seed: int, epoch: int, prob: float, span_words: int):
    """Each word not yet covered starts a span of `span_words` words with probability `prob`:
    the text words before each span are Geometric(prob) draws."""
    if prob <= 0.0:
        return (np.zeros(0, np.int64),) * 3
    seg, j, _ = _segments(np.where(n > 0, -(-n // span_words) + 1, 0))
    u = uniforms(seed, epoch, 0, keys[seg], j)
    skip = np.zeros(len(u), np.int64) if prob >= 1.0 else np.minimum(
        np.floor(np.log1p(-u) / math.log1p(-prob)), n.max(initial=0) + 1).astype(np.int64)
    starts = _segment_cumsum(skip + span_words, seg) - span_words
    keep = starts < n[seg]
    seg, starts = seg[keep], starts[keep]
    return seg, starts, np.minimum(span_words, n[seg] - starts)


def word_prob(cfg: InterleaveConfig) -> float:
    """The random method's probability: as configured, else SlamKit's hard-coded 0.5 (compat
    slamkit) or 0.3 (none)."""
    if cfg.word_prob is not None:
        return float(cfg.word_prob)
    return 0.5 if cfg.compat == conventions.SLAMKIT else 0.3


def speech_masks(n_words: np.ndarray, keys: np.ndarray, cfg: InterleaveConfig, seed: int, epoch: int) -> np.ndarray:
    """Speech masks of many documents at once, concatenated (document d owns words
    [sum(n[:d]), sum(n[:d+1]))). Document d's mask depends only on (seed, epoch, keys[d], n[d])."""
    n = np.asarray(n_words, dtype=np.int64)
    keys = np.asarray(keys, dtype=np.int64)
    total = int(n.sum())
    if cfg.compat == conventions.SLAMKIT:
        from megatron_slm.data import slamkit_sampling as sk

        if cfg.method == "poisson":
            return sk.poisson_masks(n, keys, seed, epoch, cfg.mean_span_words, cfg.speech_fraction)
        if cfg.method == "span":
            return sk.span_masks(n, keys, seed, epoch, cfg.span_prob, cfg.span_words)
        if cfg.method == "random":
            return sk.random_masks(n, keys, seed, epoch, word_prob(cfg))
        raise ValueError(f"unknown interleaving method {cfg.method!r}")
    if cfg.method == "random":
        seg, pos, _ = _segments(n)
        return uniforms(seed, epoch, 0, keys[seg], pos) < word_prob(cfg)
    if cfg.method == "poisson":
        seg, starts, lengths = _poisson_spans(n, keys, seed, epoch, cfg.mean_span_words, cfg.speech_fraction)
    elif cfg.method == "span":
        seg, starts, lengths = _span_spans(n, keys, seed, epoch, cfg.span_prob, cfg.span_words)
    else:
        raise ValueError(f"unknown interleaving method {cfg.method!r}")
    first = (np.cumsum(n) - n)[seg] + starts
    edges = np.bincount(first, minlength=total + 1) - np.bincount(first + lengths, minlength=total + 1)
    return np.cumsum(edges[:total]) > 0


def select_speech_words(n: int, key: int, cfg: InterleaveConfig, seed: int, epoch: int) -> np.ndarray:
    """The speech mask of one document of `n` words."""
    return speech_masks(np.array([n]), np.array([key]), cfg, seed, epoch)


def check_config(cfg: InterleaveConfig, prefix: str = "interleave") -> None:
    """Raise ValueError naming the bad parameter."""
    if cfg.compat not in conventions.CHOICES:
        raise ValueError(f"{prefix}.compat={cfg.compat!r} must be one of {', '.join(conventions.CHOICES)}")
    for name in ("speech_fraction", "span_prob", "word_prob"):
        if getattr(cfg, name) is not None and not 0.0 <= getattr(cfg, name) <= 1.0:
            raise ValueError(f"{prefix}.{name}={getattr(cfg, name)} must be within [0, 1]")
    if cfg.mean_span_words < 1.0:
        raise ValueError(f"{prefix}.mean_span_words={cfg.mean_span_words} must be >= 1")
    if cfg.span_words < 1:
        raise ValueError(f"{prefix}.span_words={cfg.span_words} must be >= 1")


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


@dataclasses.dataclass(frozen=True)
class Markers:
    speech: int
    text: int
    bos: Optional[int]
    eod: int


def effective_runs(u: PreparedUtterance, mask: np.ndarray, keep_empty: bool = False) -> list[tuple[int, int, bool]]:
    """Runs of the mask after turning speech spans without any unit into text (`keep_empty`:
    SlamKit's layout, where such a span stays a <speech> marker with nothing after it)."""
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


def assemble(u: PreparedUtterance, mask: np.ndarray, mk: Markers, keep_empty: bool = False) -> np.ndarray:
    """One document, run by run (the reference of `assemble_batch`)."""
    parts: list[np.ndarray] = []
    if mk.bos is not None:
        parts.append(np.array([mk.bos], dtype=np.int64))
    for a, b, speech in effective_runs(u, mask, keep_empty):
        if speech:
            parts.append(np.array([mk.speech], dtype=np.int64))
            parts.append(u.unit_ids[u.lo[a]:max(u.hi[b - 1], u.lo[a])])
        else:
            parts.append(np.array([mk.text], dtype=np.int64))
            parts.append(u.text_ids[u.tok_offsets[a]:u.tok_offsets[b]])
    parts.append(np.array([mk.eod], dtype=np.int64))
    return np.concatenate(parts)


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
        tok_end = _segment_cumsum(tok_counts, seg) + layout_starts[:-1][seg]
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
    return batch_runs(b, speech_masks(b.num_words, b.keys, cfg, seed, epoch), keep_empty=cfg.compat == conventions.SLAMKIT)


def gather_ranges(source: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """concatenate(source[s:s+l] for s, l in zip(starts, lengths)) with array operations."""
    lengths = np.asarray(lengths, dtype=np.int64)
    out_start = np.cumsum(lengths) - lengths
    idx = np.repeat(np.asarray(starts, dtype=np.int64) - out_start, lengths) + np.arange(int(lengths.sum()))
    return source[idx]


def assemble_runs(source: np.ndarray, counts: np.ndarray, src: np.ndarray, length: np.ndarray, speech: np.ndarray,
                  mk: Markers) -> tuple[np.ndarray, np.ndarray]:
    """(documents' ids concatenated, document offsets) of documents made of runs: document d has
    the next counts[d] runs; run r is a marker (<speech> if speech[r] else <text>) and then
    source[src[r]:src[r]+length[r]]; each document is [BOS] runs... EOD. `source` may be a
    memory map: only the runs' ids are read."""
    counts, length = np.asarray(counts, dtype=np.int64), np.asarray(length, dtype=np.int64)
    D, has_bos = len(counts), int(mk.bos is not None)
    run_doc = np.repeat(np.arange(D), counts)
    doc_len = has_bos + 1 + counts + np.bincount(run_doc, weights=length, minlength=D).astype(np.int64)
    doc_start = np.zeros(D + 1, dtype=np.int64)
    np.cumsum(doc_len, out=doc_start[1:])
    run_first = np.cumsum(counts) - counts                  # first run of each document
    before = np.cumsum(length) - length                     # run tokens before each run, overall
    local = np.arange(len(length)) - run_first[run_doc]     # runs before it in its document
    marker_at = doc_start[:-1][run_doc] + has_bos + local + before - before[run_first][run_doc] if len(length) else run_doc
    out = np.empty(int(doc_start[-1]), dtype=np.int64)
    content = np.arange(int(length.sum()))
    out[np.repeat(marker_at + 1 - before, length) + content] = source[np.repeat(np.asarray(src, dtype=np.int64) - before, length) + content]
    out[marker_at] = np.where(speech, mk.speech, mk.text)
    if has_bos:
        out[doc_start[:-1]] = mk.bos
    out[doc_start[1:] - 1] = mk.eod
    return out, doc_start


def assemble_batch(b: PreparedBatch, runs: Runs, mk: Markers) -> tuple[np.ndarray, np.ndarray]:
    """`assemble` for every document of a batch at once: (ids concatenated, document offsets)."""
    return assemble_runs(b.layout, np.diff(runs.offsets), runs.src, runs.length, runs.speech, mk)
