"""Transcripts + audio -> word times with a CTC model: windows for long files, batches for short.

    aligner = WordAligner(CTCModel.load(model_dir))
    for result in aligner.align([("utt1", wave, ["Once", "upon", "a", "time,"]), ...]):
        result.words       # [AlignedWord(index, word, start, end, confidence)], in transcript order
        result.unplaced    # [Unplaced(index, word, reason)]: never given invented times

A file up to `window_seconds` is one alignment (the transcript must end in the file); files of
that length are batched through the model. A longer file is aligned window by window: the
transcript's next words are aligned in the window with a free end; words that end before the
window's last `margin_seconds` are kept, the next window starts where the last kept word ends,
and the last window must take the rest of the transcript.

Why a word is unplaced: `no_tokens` (no character the model knows), `not_found` (the alignment
skipped it: cheaper than forcing it into the audio), `low_confidence` (placed, but the model's
geometric-mean probability over its frames is below `min_confidence`).
"""
from __future__ import annotations

import dataclasses
from typing import Iterator, Optional, Sequence

import numpy as np

from megatron_slm.align import ctc

REASONS = {"no_tokens": "no character the CTC vocabulary knows", "not_found": "skipped by the alignment",
           "low_confidence": "placed with confidence below --min-confidence"}


@dataclasses.dataclass
class AlignedWord:
    index: int
    word: str
    start: float
    end: float
    confidence: float


@dataclasses.dataclass
class Unplaced:
    index: int
    word: str
    reason: str


@dataclasses.dataclass
class Result:
    id: str
    seconds: float
    words: list[AlignedWord]
    unplaced: list[Unplaced]


class WordAligner:
    def __init__(self, model, window_seconds: float = 30.0, margin_seconds: float = 2.0,
                 skip_penalty: float = 10.0, min_confidence: float = 0.1, batch_size: int = 8):
        if not window_seconds > 2 * margin_seconds:
            raise ValueError(f"--window-seconds ({window_seconds}) must exceed twice --margin-seconds ({margin_seconds})")
        self.model = model
        self.window, self.margin = window_seconds, margin_seconds
        self.skip_penalty, self.min_confidence, self.batch_size = skip_penalty, min_confidence, batch_size

    def align(self, utterances: Sequence[tuple[str, np.ndarray, Sequence[str]]]) -> Iterator[Result]:
        """Results in input order; waves are mono float32 at the model's sample rate."""
        sr = self.model.sample_rate
        short = [i for i, (_, w, _) in enumerate(utterances) if len(w) <= self.window * sr]
        emitted: dict[int, np.ndarray] = {}
        for b in range(0, len(short), self.batch_size):
            idx = short[b: b + self.batch_size]
            emitted.update(zip(idx, self.model.emissions([utterances[i][1] for i in idx])))
        for i, (uid, wave, words) in enumerate(utterances):
            tokens = [self.model.word_tokens(w) for w in words]
            if i in emitted:
                placed = self._window(emitted.pop(i), tokens, [k for k, t in enumerate(tokens) if t], 0.0, final=True)[0]
            else:
                placed = self._long(wave, tokens)
            yield self._result(uid, wave, words, tokens, placed)

    # ------------------------------------------------------------------ windows

    def _window(self, logp: np.ndarray, tokens: list, cand: list[int], offset: float, final: bool
                ) -> tuple[dict[int, Optional[ctc.WordSpan]], int]:
        """Spans of words `cand` in one window ({word index: span or None}) and how many of
        `cand` are settled by it (all of them in a final window)."""
        spans = ctc.align(logp, [tokens[k] for k in cand], self.model.blank, self.skip_penalty, free_end=not final)
        fs = self.model.frame_seconds
        out = {k: (dataclasses.replace(s, start=offset + s.start * fs, end=offset + s.end * fs) if s else None)
               for k, s in zip(cand, spans)}
        if final:
            return out, len(cand)
        limit = len(logp) - self.margin / fs
        kept = [j for j, s in enumerate(spans) if s is not None and s.end <= limit]
        settled = kept[-1] + 1 if kept else 0
        return {k: out[k] for k in cand[:settled]}, settled

    def _long(self, wave: np.ndarray, tokens: list) -> dict:
        sr = self.model.sample_rate
        pending = [k for k, t in enumerate(tokens) if t]
        placed: dict = {}
        start = 0  # sample where the current window begins
        while pending and start < len(wave):
            end = min(len(wave), start + int(self.window * sr))
            final = end == len(wave)
            logp = self.model.emissions([wave[start:end]])[0]
            cand, room = [], len(logp)
            for k in pending:  # every token needs a frame: words past that cannot be in this window
                if not final and room < len(tokens[k]):
                    break
                cand.append(k)
                room -= len(tokens[k])
            got, settled = self._window(logp, tokens, cand, start / sr, final)
            placed.update(got)
            if final:
                pending = []
                break
            if settled:
                last = got[cand[settled - 1]]
                start = max(start + 1, int(round(last.end * sr)))
                pending = pending[settled:]
            else:  # nothing ended in this window (silence, music, one very long word): move on
                start += int((self.window - self.margin) * sr)
        placed.update({k: None for k in pending})  # the audio ended first
        return placed

    def _result(self, uid: str, wave: np.ndarray, words: Sequence[str], tokens: list, placed: dict) -> Result:
        secs = len(wave) / self.model.sample_rate
        good, bad = [], []
        for k, w in enumerate(words):
            span = placed.get(k)
            if not tokens[k]:
                bad.append(Unplaced(k, w, "no_tokens"))
            elif span is None:
                bad.append(Unplaced(k, w, "not_found"))
            elif span.confidence < self.min_confidence:
                bad.append(Unplaced(k, w, "low_confidence"))
            else:
                good.append(AlignedWord(k, w, round(span.start, 5), round(min(span.end, secs), 5),
                                        round(span.confidence, 4)))
        return Result(uid, secs, good, bad)
