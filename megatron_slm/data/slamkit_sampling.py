"""SlamKit's three word samplers, reproduced in distribution and drawn for many documents at once.

SlamKit (the code the released SIMS models were trained with) decides per utterance which words
are spoken:

  poisson  target = ceil(n * eta) words. Repeat while fewer are chosen and eligible starts remain:
           draw a start uniformly among the eligible word indices and a length L ~ Poisson(lambda)
           (0 possible); reject the draw when [start, start+L) overlaps a chosen span, else choose
           it (cut at the utterance end, never at the target) and make its words and the index
           just after it ineligible. Spans may overshoot the target, so short utterances get far
           more speech than eta (0.64 of 10 words at lambda=10, eta=0.3).
  span     per word, with probability p start (or restart) a countdown of `span` words: a word is
           spoken when a start fell on it or on one of the span-1 words before it.
  random   each word spoken with probability 0.5.

Draws use the counter-based uniforms of `draws` (a document's mask depends only on seed,
epoch, its key and its length), so the dynamic dataset stays reproducible and independent of
workers and batches.

The poisson loop is simulated by rounds over all still-active documents, each round accepting one
draw per document. A rejected draw leaves the state unchanged, so only the accepted draws matter:
a round tries a few draws made exactly as SlamKit makes them and keeps the first accepted one;
when all are rejected (the free gaps are short: SlamKit itself may then loop thousands of times)
it draws from the law of accepted draws directly. With g(s) = words from s to the next chosen
word (infinite when none follows), a draw starting at s is accepted with probability
P(L <= g(s)), so the accepted start has weights P(L <= g(s)) over the eligible indices and its
length is Poisson truncated to <= g(s).
"""
from __future__ import annotations

import numpy as np

from megatron_slm.data.draws import poisson_cdf, poisson_ppf, uniforms
from megatron_slm.data.ragged import segments

# uniforms streams of these samplers (distinct from the project's own samplers' streams)
_START, _LENGTH, _WEIGHTED_START, _WEIGHTED_LENGTH, _SPAN, _RANDOM = 20, 21, 22, 23, 24, 25
SLAMKIT_RANDOM_PROB = 0.5  # hard-coded in SlamKit's random method


PROPOSALS = 6  # SlamKit draws tried per document and round before the exact weighted draw


def poisson_masks(n: np.ndarray, keys: np.ndarray, seed: int, epoch: int, lam: float, eta: float) -> np.ndarray:
    """Concatenated speech masks of documents with `n` words (SlamKit's select_spans_poisson).

    Each round accepts one draw per active document: the first accepted of PROPOSALS draws made
    exactly as SlamKit makes them (uniform start, eligible?, Poisson length, overlap?), else (all
    rejected: the free gaps are short) one draw from the law of accepted draws (`_weighted_draws`).
    Either way the draw has the law of SlamKit's next accepted draw."""
    n = np.asarray(n, dtype=np.int64)
    keys = np.asarray(keys, dtype=np.int64)
    base = np.cumsum(n) - n
    mask = np.zeros(int(n.sum()), dtype=bool)
    eligible = np.ones(int(n.sum()), dtype=bool)
    target = np.ceil(n * float(eta)).astype(np.int64)
    chosen = np.zeros(len(n), dtype=np.int64)
    left = n.copy()                                             # eligible starts per document
    docs = np.flatnonzero((target > 0) & (n > 0))
    r = 0
    while len(docs):
        nd, bd, kd = n[docs], base[docs], keys[docs]
        s, end, stuck = _proposed_draws(mask, eligible, nd, bd, kd, seed, epoch, r, lam)
        if len(stuck):
            s[stuck], end[stuck] = _weighted_draws(mask, eligible, nd[stuck], bd[stuck], kd[stuck], seed, epoch, r, lam)
        # choose [s, end); s..end (the index after the span included) become ineligible
        seg, k, _ = segments(end - s)
        mask[bd[seg] + s[seg] + k] = True
        off = np.minimum(end, nd - 1)
        seg, k, _ = segments(off - s + 1)
        idx = bd[seg] + s[seg] + k
        left[docs] -= np.bincount(seg, weights=eligible[idx], minlength=len(docs)).astype(np.int64)
        eligible[idx] = False
        chosen[docs] += end - s
        docs = docs[(chosen[docs] < target[docs]) & (left[docs] > 0)]
        r += 1
    return mask


def _proposed_draws(mask: np.ndarray, eligible: np.ndarray, nd: np.ndarray, bd: np.ndarray, kd: np.ndarray,
                    seed: int, epoch: int, r: int, lam: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(start, end, documents with no accepted draw) of round `r`: PROPOSALS draws per document
    made as SlamKit makes them (a start uniform over the words, kept when eligible -- uniform over
    the eligible ones --, a Poisson length, rejected when it overlaps a chosen word), the first
    accepted one kept."""
    D = len(nd)
    if PROPOSALS < 1:
        return np.zeros(D, np.int64), np.zeros(D, np.int64), np.arange(D)
    rep = np.repeat(np.arange(D), PROPOSALS)
    counter = r * PROPOSALS + np.tile(np.arange(PROPOSALS), D)
    s = np.minimum((uniforms(seed, epoch, _START, kd[rep], counter) * nd[rep]).astype(np.int64), nd[rep] - 1)
    length = poisson_ppf(uniforms(seed, epoch, _LENGTH, kd[rep], counter), float(lam))
    end = np.minimum(s + length, nd[rep])
    seg, k, _ = segments(end - s)
    overlap = np.bincount(seg, weights=mask[bd[rep][seg] + s[seg] + k], minlength=len(rep)) > 0
    ok = (eligible[bd[rep] + s] & ~overlap).reshape(D, PROPOSALS)
    pick = np.arange(D) * PROPOSALS + np.argmax(ok, axis=1)
    return s[pick], end[pick], np.flatnonzero(~ok.any(axis=1))


def _weighted_draws(mask: np.ndarray, eligible: np.ndarray, nd: np.ndarray, bd: np.ndarray, kd: np.ndarray,
                    seed: int, epoch: int, r: int, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) of one accepted draw per document, from the law of SlamKit's accepted draws:
    with g(s) the words from s to the next chosen one, start s has weight P(L <= g(s)) (1 when no
    chosen word follows) among the eligible indices, and L is Poisson(lambda) given L <= g(s)."""
    cdf = poisson_cdf(float(lam)) if lam > 0 else np.ones(1)
    seg, pos, _ = segments(nd)
    word = bd[seg] + pos
    nxt = _segment_suffix_min(np.where(mask[word], pos, nd[seg]), seg)  # next chosen position, nd if none
    accept = np.where(nxt >= nd[seg], 1.0, cdf[np.minimum(nxt - pos, len(cdf) - 1)])
    weight = np.where(eligible[word], accept, 0.0)
    cum = np.cumsum(weight)
    last = np.cumsum(nd) - 1
    first = last - nd + 1
    before = np.where(first > 0, cum[np.maximum(first - 1, 0)], 0.0)
    u = uniforms(seed, epoch, _WEIGHTED_START, kd, np.full(len(kd), r))
    pick = np.clip(np.searchsorted(cum, before + u * (cum[last] - before), side="right"), first, last)
    bad = weight[pick] == 0  # float rounding at a document's end: step to the nearest eligible word
    if bad.any():
        pick[bad] = _nearest_positive(weight, pick[bad], first[bad], last[bad])
    v = uniforms(seed, epoch, _WEIGHTED_LENGTH, kd, np.full(len(kd), r)) * accept[pick]
    s = pos[pick]
    return s, np.minimum(s + poisson_ppf(v, float(lam)), nd)


def _segment_suffix_min(values: np.ndarray, seg: np.ndarray) -> np.ndarray:
    """Minimum over each element and the later elements of its own segment (`seg` sorted,
    `values` non-negative ints): one reversed running minimum over values offset by segment, so
    a later segment's elements are always larger."""
    if not len(values):
        return values
    offset = seg.astype(np.int64) * (int(values.max()) + 1)
    return np.minimum.accumulate((offset + values)[::-1])[::-1] - offset


def _nearest_positive(weight: np.ndarray, at: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """For each index `at` in [lo, hi], the closest index in that range with positive weight."""
    out = at.copy()
    for i, (a, l, h) in enumerate(zip(at.tolist(), lo.tolist(), hi.tolist())):
        cand = np.flatnonzero(weight[l:h + 1] > 0) + l
        out[i] = cand[np.argmin(np.abs(cand - a))]
    return out


def span_masks(n: np.ndarray, keys: np.ndarray, seed: int, epoch: int, prob: float, span_words: int) -> np.ndarray:
    """SlamKit's `span` method: a word is spoken when a start (probability `prob`) fell on it or on
    one of the `span_words - 1` words before it."""
    n = np.asarray(n, dtype=np.int64)
    seg, pos, starts = segments(n)
    start = uniforms(seed, epoch, _SPAN, np.asarray(keys, dtype=np.int64)[seg], pos) < prob
    flat = np.arange(len(pos))
    last = np.maximum.accumulate(np.where(start, flat, -1)) if len(pos) else flat
    return (last >= starts[seg]) & (flat - last < span_words)


def random_masks(n: np.ndarray, keys: np.ndarray, seed: int, epoch: int, prob: float) -> np.ndarray:
    """SlamKit's `random` method: every word spoken with probability `prob` (0.5 in SlamKit)."""
    seg, pos, _ = segments(np.asarray(n, dtype=np.int64))
    return uniforms(seed, epoch, _RANDOM, np.asarray(keys, dtype=np.int64)[seg], pos) < prob
