"""Array operations over many variable-length segments at once (documents of words, words of
tokens, runs of ids): the batch code of interleaving works on flat arrays with these instead of
a Python loop per document."""
from __future__ import annotations

import numpy as np


def segments(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For consecutive segments of `counts` elements: (segment of each element, its position
    in the segment, the segments' start offsets)."""
    counts = np.asarray(counts, dtype=np.int64)
    starts = np.cumsum(counts) - counts
    seg = np.repeat(np.arange(len(counts)), counts)
    return seg, np.arange(int(counts.sum())) - starts[seg], starts


def segment_cumsum(values: np.ndarray, seg: np.ndarray) -> np.ndarray:
    """Inclusive cumulative sum restarting at every segment (`seg` sorted)."""
    c = np.cumsum(values)
    first = np.flatnonzero(np.r_[True, seg[1:] != seg[:-1]]) if len(seg) else np.zeros(0, np.int64)
    before = np.repeat(c[first] - values[first], np.diff(np.r_[first, len(seg)]))
    return c - before


def gather_ranges(source: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """concatenate(source[s:s+l] for s, l in zip(starts, lengths)) with array operations."""
    lengths = np.asarray(lengths, dtype=np.int64)
    out_start = np.cumsum(lengths) - lengths
    idx = np.repeat(np.asarray(starts, dtype=np.int64) - out_start, lengths) + np.arange(int(lengths.sum()))
    return source[idx]
