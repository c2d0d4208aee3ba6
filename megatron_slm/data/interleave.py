"""Interleaving speech and text over aligned words: small pure functions.

An utterance is prepared once (`prepare`): per-word text token ids (each word after the first
with its leading space) and, per word, the range of deduplicated unit runs inside its time span.
A draw (`select_speech_words`) marks which words are spoken; `assemble` then emits

    [BOS] <text> w0 w1 <speech> u.. u.. <text> w4 ... [EOD]

with a modality marker at the start and at every switch. A speech span over words i..j covers
the unit runs that have at least one frame whose centre lies in [start_i, end_j] (frame-level
time ranges, so dedup durations are respected). A speech span with no units at all is emitted as
text. Draws are seeded by (seed, epoch, document key) so static preprocessing and the dynamic
dataset produce the same document for the same epoch.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import threading
import zlib
from typing import Optional

import numpy as np

from megatron_slm.config import InterleaveConfig


def document_key(utterance_id: str) -> int:
    """A stable 31-bit key for an utterance: seeds its draws independently of file order/workers."""
    return zlib.crc32(utterance_id.encode("utf-8")) & 0x7FFFFFFF


_THREAD = threading.local()


def rng_for(seed: int, epoch: int, key: int) -> np.random.Generator:
    """A PCG64 generator whose state is a BLAKE2b hash of (seed, epoch, key). It is this
    thread's one generator, re-stated on every call (4x cheaper than a SeedSequence, which
    matters at one draw per document per sample): use it before calling rng_for again."""
    gen = getattr(_THREAD, "gen", None)
    if gen is None:
        gen = _THREAD.gen = np.random.Generator(np.random.PCG64(0))
    h = hashlib.blake2b(b"%d,%d,%d" % (int(seed), int(epoch), int(key)), digest_size=32).digest()
    gen.bit_generator.state = {"bit_generator": "PCG64", "has_uint32": 0, "uinteger": 0,
                               "state": {"state": int.from_bytes(h[:16], "little"),
                                         "inc": int.from_bytes(h[16:], "little") | 1}}
    return gen


# ----------------------------------------------------------------------------- span selection


def select_poisson(n: int, rng: np.random.Generator, mean_span: float, fraction: float) -> np.ndarray:
    """Speech mask with E[#speech words] = fraction*n exactly (stochastic rounding) cut into
    spans of 1+Poisson(mean_span-1) words, placed uniformly at random and never adjacent (so
    every drawn span stays a visible span)."""
    mask = np.zeros(n, dtype=bool)
    target = fraction * n
    m = int(math.floor(target)) + int(rng.random() < target - math.floor(target))
    if m <= 0:
        return mask
    if m >= n:
        mask[:] = True
        return mask
    # span lengths 1 + Poisson(mean - 1) until they cover m words; the last one is cut to fit.
    # (small lists: plain Python beats numpy calls here, and this runs per document per sample)
    lam = max(mean_span - 1.0, 0.0)
    drawn = (rng.poisson(lam, size=int(m / (lam + 1.0)) + 2) + 1).tolist()
    lengths, total = [], 0
    while total < m:
        if len(lengths) == len(drawn):
            drawn += (rng.poisson(lam, size=len(drawn)) + 1).tolist()
        lengths.append(drawn[len(lengths)])
        total += lengths[-1]
    lengths[-1] -= total - m
    # k spans need k distinct slots among the n-m+1 gaps around text words; merge if too many
    gaps = n - m + 1
    if len(lengths) > gaps:
        lengths = lengths[:gaps - 1] + [sum(lengths[gaps - 1:])]
    k = len(lengths)
    if k > 1:
        lengths = [lengths[j] for j in rng.permutation(k).tolist()]
    slots = sorted(rng.permutation(gaps)[:k].tolist())
    # slot s = "after s text words": a span starts after its slot's text words and the earlier spans
    offset = 0
    for slot, length in zip(slots, lengths):
        mask[slot + offset:slot + offset + length] = True
        offset += length
    return mask


def select_span(n: int, rng: np.random.Generator, prob: float, span_words: int) -> np.ndarray:
    """Each word not yet covered starts a speech span of `span_words` words with probability `prob`."""
    mask = np.zeros(n, dtype=bool)
    draws = rng.random(n)
    i = 0
    while i < n:
        if draws[i] < prob:
            mask[i:i + span_words] = True
            i += span_words
        else:
            i += 1
    return mask


def select_random(n: int, rng: np.random.Generator, prob: float) -> np.ndarray:
    return rng.random(n) < prob


def check_config(cfg: InterleaveConfig, prefix: str = "interleave") -> None:
    """Raise ValueError naming the bad parameter."""
    for name in ("speech_fraction", "span_prob", "word_prob"):
        if not 0.0 <= getattr(cfg, name) <= 1.0:
            raise ValueError(f"{prefix}.{name}={getattr(cfg, name)} must be within [0, 1]")
    if cfg.mean_span_words < 1.0:
        raise ValueError(f"{prefix}.mean_span_words={cfg.mean_span_words} must be >= 1")
    if cfg.span_words < 1:
        raise ValueError(f"{prefix}.span_words={cfg.span_words} must be >= 1")


def select_speech_words(n: int, rng: np.random.Generator, cfg: InterleaveConfig) -> np.ndarray:
    if cfg.method == "poisson":
        return select_poisson(n, rng, cfg.mean_span_words, cfg.speech_fraction)
    if cfg.method == "span":
        return select_span(n, rng, cfg.span_prob, cfg.span_words)
    if cfg.method == "random":
        return select_random(n, rng, cfg.word_prob)
    raise ValueError(f"unknown interleaving method {cfg.method!r}")


def runs(mask: np.ndarray) -> list[tuple[int, int, bool]]:
    """[(start, end, is_speech)] maximal runs of equal mask values."""
    n = len(mask)
    if n == 0:
        return []
    bounds = [0] + (np.flatnonzero(mask[1:] != mask[:-1]) + 1).tolist() + [n]
    first = bool(mask[0])
    return [(bounds[r], bounds[r + 1], first != bool(r & 1)) for r in range(len(bounds) - 1)]


# ----------------------------------------------------------------------------- units in time


def word_unit_ranges(starts: np.ndarray, ends: np.ndarray, durations: np.ndarray, unit_seconds: float
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Per word, the unit runs [lo, hi) with a frame centre inside [start, end]. A span of words
    i..j then owns runs [lo[i], hi[j]) -- every run overlapping its frame range."""
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


def effective_runs(u: PreparedUtterance, mask: np.ndarray) -> list[tuple[int, int, bool]]:
    """Runs of the mask after turning speech spans without any unit into text."""
    segs = runs(mask)
    empty = [(a, b) for a, b, sp in segs if sp and u.hi[b - 1] <= u.lo[a]]
    if not empty:
        return segs
    mask = mask.copy()
    for a, b in empty:
        mask[a:b] = False
    return runs(mask)


def assemble(u: PreparedUtterance, mask: np.ndarray, mk: Markers) -> np.ndarray:
    parts: list[np.ndarray] = []
    if mk.bos is not None:
        parts.append(np.array([mk.bos], dtype=np.int64))
    for a, b, speech in effective_runs(u, mask):
        if speech:
            parts.append(np.array([mk.speech], dtype=np.int64))
            parts.append(u.unit_ids[u.lo[a]:u.hi[b - 1]])
        else:
            parts.append(np.array([mk.text], dtype=np.int64))
            parts.append(u.text_ids[u.tok_offsets[a]:u.tok_offsets[b]])
    parts.append(np.array([mk.eod], dtype=np.int64))
    return np.concatenate(parts)


def assembled_length(u: PreparedUtterance, mask: np.ndarray, has_bos: bool) -> int:
    """len(assemble(u, mask, ...)) without building it."""
    n = int(has_bos) + 1
    for a, b, speech in effective_runs(u, mask):
        n += 1 + (int(u.hi[b - 1] - u.lo[a]) if speech else int(u.tok_offsets[b] - u.tok_offsets[a]))
    return n


def draw(u: PreparedUtterance, cfg: InterleaveConfig, seed: int, epoch: int) -> np.ndarray:
    """The speech mask of utterance `u` for (seed, epoch)."""
    return select_speech_words(u.num_words, rng_for(seed, epoch, u.key), cfg)
