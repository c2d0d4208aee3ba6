"""Plain-Python references of SlamKit's behaviour, written from its documented rules, for the tests
and benchmarks that check `compat=slamkit` (megatron_slm/conventions.py) against it. One utterance at
a time, with numpy's own random generator: slow and independent of the vectorised code.
"""
from __future__ import annotations

import bisect
import math
from typing import Sequence

import numpy as np


def poisson_words(n: int, lam: float, eta: float, rng: np.random.Generator) -> np.ndarray:
    """SlamKit's poisson selection over n words: target ceil(n*eta); repeat while short of it and
    starts remain: a start uniform over the eligible indices, a length Poisson(lam), rejected when
    it overlaps a chosen span, else chosen (cut at the end, never at the target) and its indices
    plus the one after it leave the eligible set."""
    goal, picked, free = math.ceil(n * eta), np.zeros(n, bool), list(range(n))
    count = 0
    while count < goal and free:
        start = free[rng.integers(len(free))]
        stop = min(start + rng.poisson(lam), n)
        if picked[start:stop].any():
            continue
        picked[start:stop] = True
        count += stop - start
        gone = set(range(start, stop + 1))
        free = [i for i in free if i not in gone]
    return picked


def span_words(n: int, prob: float, span: int, rng: np.random.Generator) -> np.ndarray:
    """SlamKit's span method: at each word a start (probability prob) restarts a countdown of
    `span` words; a word is speech while the countdown runs."""
    out, countdown = np.zeros(n, bool), 0
    for i in range(n):
        if rng.random() < prob:
            countdown = span
        out[i] = countdown > 0
        countdown -= 1
    return out


def random_words(n: int, rng: np.random.Generator) -> np.ndarray:
    """SlamKit's random method: each word speech with probability 0.5."""
    return rng.random(n) < 0.5


def interleaved_string(words: Sequence[str], starts: Sequence[float], ends: Sequence[float], speech: Sequence[bool],
                       durations: Sequence[int], units: Sequence[int], unit_seconds: float) -> str:
    """SlamKit's interleaved string for given word modalities: a marker first and at each switch,
    text words with their leading space, a speech span as the <Un k> of the runs whose end time
    (cumsum(durations) * unit_seconds) lies in [its first word's start, its last word's end]."""
    end_times = list(np.cumsum(durations) * unit_seconds)
    pieces, i = [], 0
    while i < len(words):
        j = i
        while j + 1 < len(words) and speech[j + 1] == speech[i]:
            j += 1
        if speech[i]:
            a, b = bisect.bisect_left(end_times, starts[i]), bisect.bisect_right(end_times, ends[j])
            pieces.append("<speech>" + "".join(f"<Un{u}>" for u in units[a:b]))
        else:
            pieces.append("<text>" + "".join(" " + w for w in words[i:j + 1]))
        i = j + 1
    return "".join(pieces)


def document_ids(tokenizer, *args) -> list[int]:
    """SlamKit's training ids of an interleaved document: its string through the HF tokenizer
    (whatever special tokens the tokenizer adds)."""
    return tokenizer(interleaved_string(*args), add_special_tokens=True)["input_ids"]
