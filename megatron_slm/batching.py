"""Length bucketing shared by audio extraction (seconds) and likelihood scoring (tokens)."""
from __future__ import annotations

from typing import Sequence


def length_buckets(lengths: Sequence[float], max_padded: float, max_items: int,
                   longest_first: bool = False) -> list[list[int]]:
    """Indices grouped by length so padding stays small.

    Sorted by length (ties by index), cut greedily: a batch holds at most `max_items` entries and
    its padded size (entries x longest) stays within `max_padded`; an entry longer than the
    budget gets a batch of its own.
    """
    sign = -1 if longest_first else 1
    order = sorted(range(len(lengths)), key=lambda i: (sign * lengths[i], i))
    batches: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        longest = max(lengths[cur[0]], lengths[i]) if cur else lengths[i]  # sorted: an end is longest
        if cur and (len(cur) >= max_items or (len(cur) + 1) * longest > max_padded):
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches
