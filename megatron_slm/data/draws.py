"""Counter-based random draws: every random number of an interleaving is a pure function of
(seed, epoch, document key, stream, counter).

A splitmix64 hash of those turned into a uniform in [0, 1): a document's draw is then independent
of which batch, worker or file position it is drawn in, static preprocessing and the dynamic
dataset draw the same document for the same epoch, and all documents of a batch are drawn with
array operations (a per-document Generator costs more than the whole vectorised draw). Each
sampler uses its own stream numbers.
"""
from __future__ import annotations

import functools
import math
import zlib

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_U64 = (1 << 64) - 1


def document_key(utterance_id: str) -> int:
    """A stable 31-bit key for an utterance: seeds its draws independently of file order/workers."""
    return zlib.crc32(utterance_id.encode("utf-8")) & 0x7FFFFFFF


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
def poisson_cdf(lam: float) -> np.ndarray:
    """P(L <= k) of Poisson(lam) for k = 0.. (cut ~12 sd past the mean). Cached: do not modify."""
    k = np.arange(int(lam + 12.0 * math.sqrt(lam) + 20.0))
    log_pmf = k * math.log(lam) - lam - np.array([math.lgamma(i + 1.0) for i in k])
    return np.cumsum(np.exp(log_pmf))


def poisson_ppf(u: np.ndarray, lam: float) -> np.ndarray:
    """Poisson(lam) draws from uniforms by the inverse CDF (the tail past ~12 sd is cut)."""
    if lam <= 0:
        return np.zeros(len(u), dtype=np.int64)
    cdf = poisson_cdf(float(lam))
    return np.minimum(np.searchsorted(cdf, u, side="right"), len(cdf) - 1).astype(np.int64)
