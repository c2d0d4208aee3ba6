"""Which words of a document are spoken: the span samplers of both conventions behind one
dispatch (`speech_masks`).

  slamkit  SlamKit's samplers, reproduced in distribution (slamkit_sampling.py).
  none     this project's earlier rules: poisson gives exactly fraction*n speech words
           (stochastic rounding) in spans of 1+Poisson(mean_span-1) words placed in distinct
           random gaps between text words; span starts a span with probability p per uncovered
           word; random speaks each word with probability word_prob.

A document's mask depends only on (seed, epoch, its key, its length): draws are counter-based
(draws.py), so masks of many documents are drawn at once, in any batch, with the same result.
"""
from __future__ import annotations

import math

import numpy as np

from megatron_slm import conventions
from megatron_slm.config import InterleaveConfig
from megatron_slm.data import slamkit_sampling
from megatron_slm.data.draws import poisson_ppf, uniforms
from megatron_slm.data.ragged import segment_cumsum, segments

# ----------------------------------------------------------------------------- the `none` samplers
# Each returns spans (document, first word, number of words), sorted by document and start,
# non-overlapping and never adjacent; `speech_masks` turns them into word masks.


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
    seg, j, _ = segments(np.where(active, m, 0))
    lengths = 1 + poisson_ppf(uniforms(seed, epoch, 1, keys[seg], j), max(mean_span - 1.0, 0.0))
    cum = segment_cumsum(lengths, seg)
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
    gseg, g, gstart = segments(np.where(k > 0, gaps, 0))
    order = np.argsort(gseg + 0.5 * uniforms(seed, epoch, 3, keys[gseg], g))
    chosen = np.sort(order[(np.arange(len(order)) - gstart[gseg[order]]) < k[gseg[order]]])
    slots = g[chosen]
    # gap s = "after s text words": a span starts after its gap's text words and the earlier spans
    starts = slots + segment_cumsum(lengths, seg) - lengths
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
    seg, j, _ = segments(np.where(n > 0, -(-n // span_words) + 1, 0))
    u = uniforms(seed, epoch, 0, keys[seg], j)
    skip = np.zeros(len(u), np.int64) if prob >= 1.0 else np.minimum(
        np.floor(np.log1p(-u) / math.log1p(-prob)), n.max(initial=0) + 1).astype(np.int64)
    starts = segment_cumsum(skip + span_words, seg) - span_words
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
        if cfg.method == "poisson":
            return slamkit_sampling.poisson_masks(n, keys, seed, epoch, cfg.mean_span_words, cfg.speech_fraction)
        if cfg.method == "span":
            return slamkit_sampling.span_masks(n, keys, seed, epoch, cfg.span_prob, cfg.span_words)
        if cfg.method == "random":
            return slamkit_sampling.random_masks(n, keys, seed, epoch, word_prob(cfg))
        raise ValueError(f"unknown interleaving method {cfg.method!r}")
    if cfg.method == "random":
        seg, pos, _ = segments(n)
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
