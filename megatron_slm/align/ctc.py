"""CTC forced alignment of words: a Viterbi over the emissions, vectorised over the trellis states.

The trellis is the usual CTC one over the transcript's tokens (a blank state before, between and
after the tokens: S = 2L + 1 states, a token may be skipped-to over a blank unless it repeats
the previous token), with one addition: every word can be *skipped*, from the blank before it
to the blank after it, at a cost of `skip_penalty` nats. A word that is not in the audio then
gets no frames rather than stealing some from its neighbours: it is reported, never invented.
With `free_end` the path may stop after any word (a window of a longer file: the rest of the
transcript belongs to later windows).

The gap between words is the blank (a model's word-delimiter token is folded into it by the
caller). Loops run over frames only; each step is a handful of array operations over the states.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np

NEG = -1e30
STAY, NEXT, OVER_BLANK, SKIP_WORD = 0, 1, 2, 3


@dataclasses.dataclass
class WordSpan:
    start: int          # first frame
    end: int            # one past the last frame
    confidence: float   # geometric mean of the path's frame probabilities over the word


@dataclasses.dataclass
class Trellis:
    """The state layout of a transcript: word w's tokens are token states first[w]..last[w]."""

    labels: np.ndarray       # [S] emission index of each state (blank at even states)
    over_blank: np.ndarray   # [S] bool: may enter from s - 2
    skip_src: np.ndarray     # [S] state a word skip comes from (-1: none)
    first: np.ndarray        # [W] first token index of each word
    last: np.ndarray         # [W] last token index

    @classmethod
    def build(cls, word_tokens: Sequence[Sequence[int]], blank: int) -> "Trellis":
        lens = np.asarray([len(t) for t in word_tokens], dtype=np.int64)
        if (lens == 0).any():
            raise ValueError("every word needs at least one token")
        tokens = np.asarray([x for t in word_tokens for x in t], dtype=np.int64)
        L = tokens.size
        S = 2 * L + 1
        labels = np.full(S, blank, dtype=np.int64)
        labels[1::2] = tokens
        over = np.zeros(S, dtype=bool)
        over[3::2] = tokens[1:] != tokens[:-1]
        last = np.cumsum(lens) - 1
        first = last - lens + 1
        skip_src = np.full(S, -1, dtype=np.int64)
        skip_src[2 * (last + 1)] = 2 * first  # blank after word w <- blank before word w
        return cls(labels, over, skip_src, first, last)

    @property
    def num_states(self) -> int:
        return self.labels.size


def viterbi(emit: np.ndarray, trellis: Trellis, skip_penalty: float, free_end: bool = False) -> Optional[np.ndarray]:
    """Best state per frame for emissions `emit` [T, S] (log-probabilities of each state's label),
    or None when no path exists (more tokens than frames can hold)."""
    T, S = emit.shape
    score = np.full(S, NEG)
    score[:2] = emit[0, :2]
    back = np.zeros((T, S), dtype=np.int8)
    has_skip = trellis.skip_src >= 0
    src = np.where(has_skip, trellis.skip_src, 0)
    cand = np.empty((4, S))
    for t in range(1, T):
        cand[STAY] = score
        cand[NEXT, 0], cand[NEXT, 1:] = NEG, score[:-1]
        cand[OVER_BLANK, :2], cand[OVER_BLANK, 2:] = NEG, score[:-2]
        cand[OVER_BLANK, ~trellis.over_blank] = NEG
        cand[SKIP_WORD] = np.where(has_skip, score[src] - skip_penalty, NEG)
        choice = cand.argmax(axis=0)
        back[t] = choice
        score = cand[choice, np.arange(S)] + emit[t]
    ends = _end_states(trellis, free_end)
    s = int(ends[np.argmax(score[ends])])
    if score[s] <= NEG / 2:
        return None
    path = np.empty(T, dtype=np.int64)
    path[T - 1] = s
    for t in range(T - 1, 0, -1):
        c = back[t, s]
        s = s if c == STAY else s - 1 if c == NEXT else s - 2 if c == OVER_BLANK else int(trellis.skip_src[s])
        path[t - 1] = s
    return path


def _end_states(trellis: Trellis, free_end: bool) -> np.ndarray:
    S = trellis.num_states
    if not free_end:
        return np.array([S - 1, S - 2])
    return np.unique(np.concatenate([2 * trellis.first, 2 * trellis.last + 1, [S - 1]]))


def word_spans(path: np.ndarray, emit: np.ndarray, trellis: Trellis) -> list[Optional[WordSpan]]:
    """Per word: its frames on the path (first to last frame in one of its token states, the
    blanks between its tokens included) and confidence, or None when the path skipped it or
    stopped before it."""
    token = np.where(path % 2 == 1, (path - 1) // 2, -1)
    frame_logp = emit[np.arange(path.size), path]
    out: list[Optional[WordSpan]] = []
    for f, l in zip(trellis.first, trellis.last):
        hit = np.flatnonzero((token >= f) & (token <= l))
        if hit.size == 0:
            out.append(None)
            continue
        a, b = int(hit[0]), int(hit[-1]) + 1
        out.append(WordSpan(a, b, float(np.exp(frame_logp[a:b].mean()))))
    return out


def align(logp: np.ndarray, word_tokens: Sequence[Sequence[int]], blank: int, skip_penalty: float = 10.0,
          free_end: bool = False) -> list[Optional[WordSpan]]:
    """Word spans of `word_tokens` in emissions `logp` [T, V] (log-softmax over the model's
    vocabulary); None for words the alignment skipped (or, with `free_end`, did not reach)."""
    if not word_tokens:
        return []
    trellis = Trellis.build(word_tokens, blank)
    emit = np.asarray(logp, dtype=np.float64)[:, trellis.labels]
    path = viterbi(emit, trellis, skip_penalty, free_end)
    if path is None:
        return [None] * len(word_tokens)
    return word_spans(path, emit, trellis)
