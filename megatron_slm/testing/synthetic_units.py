"""Synthetic aligned corpora (units JSONL + its identity sidecar + alignment JSONL) for tests and
benchmarks: random English-like words with plausible timings and deduplicated 25 Hz units."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Optional

import numpy as np

from megatron_slm.units.records import make_meta, make_record, write_meta

WORDS = ("the a little girl named lily had big red ball every day she played with in green park near her house "
         "one sunny rolled away to small pond dog ran after it and they laughed together under old tree boy "
         "found shiny stone by river carried back home mother smiled said thank you story ended happily").split()

FRAME_RATE = 25.0
SYLLABLES = [c + v for c in "bdfgklmnprstvwz" for v in ("a", "e", "i", "o", "u", "ai", "ou")]


def zipf_lexicon(size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(distinct pseudo-words of 1-4 syllables, Zipfian probabilities ~ 1/rank): a corpus whose
    word repetition looks like real speech transcripts (LibriSpeech: ~90k distinct words)."""
    rng = np.random.default_rng(seed)
    words: dict[str, None] = dict.fromkeys(WORDS)
    while len(words) < size:
        words["".join(rng.choice(SYLLABLES, int(rng.integers(1, 5))))] = None
    p = 1.0 / np.arange(1, size + 1) ** 1.05
    return np.array(list(words)[:size]), p / p.sum()


@dataclass
class SyntheticCorpus:
    units: str
    alignments: str
    ids: list[str]


def synthetic_utterance(rng: np.random.Generator, uid: str, n_words: int, k: int,
                        lexicon: Optional[tuple[np.ndarray, np.ndarray]] = None) -> tuple[dict, dict]:
    """(units record dict, canonical alignment dict) of one utterance."""
    T = 1.0 / FRAME_RATE
    words = [str(w) for w in (rng.choice(lexicon[0], n_words, p=lexicon[1]) if lexicon else rng.choice(WORDS, n_words))]
    words[0] = words[0].capitalize()
    words[-1] += "."
    t, spans = float(rng.uniform(0.1, 0.3)), []
    for _ in words:
        length = float(rng.uniform(0.12, 0.5))
        spans.append((round(t, 5), round(t + length, 5)))
        t += length + float(rng.uniform(0.0, 0.15))
    audio = t + 0.2
    n_frames = int(np.ceil(audio / T))
    # units change every 1-4 frames, so runs have real durations
    frame_units = np.repeat(rng.integers(0, k, n_frames), rng.integers(1, 5, n_frames))[:n_frames]
    rec = make_record(uid, f"audio/{uid}.wav", frame_units, T, audio)
    al = {"id": uid, "audio": f"audio/{uid}.wav", "text": " ".join(words),
          "words": [{"word": w, "start": s, "end": e} for w, (s, e) in zip(words, spans)]}
    return json.loads(rec.to_json()), al


def write_synthetic_corpus(directory: str, n: int, k: int = 20, words: tuple[int, int] = (8, 30), seed: int = 0,
                           name: str = "syn", meta: Optional[dict] = None, lexicon: int = 0) -> SyntheticCorpus:
    """`lexicon` > 0: words from a Zipfian lexicon of that many words (else a 60-word story list)."""
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(seed)
    lex = zipf_lexicon(lexicon, seed) if lexicon else None
    units_path = os.path.join(directory, f"{name}_units.jsonl")
    align_path = os.path.join(directory, f"{name}_alignments.jsonl")
    ids = []
    with open(units_path, "w", encoding="utf-8") as fu, open(align_path, "w", encoding="utf-8") as fa:
        for i in range(n):
            uid = f"{name}{i:06d}"
            rec, al = synthetic_utterance(rng, uid, int(rng.integers(words[0], words[1] + 1)), k, lex)
            fu.write(json.dumps(rec, separators=(",", ":")) + "\n")
            fa.write(json.dumps(al) + "\n")
            ids.append(uid)
    extractor = {"name": "synthetic", "frame_rate": FRAME_RATE, "version": 1}
    write_meta(units_path, meta or make_meta(extractor, k, "0" * 64, None, True))
    return SyntheticCorpus(units_path, align_path, ids)
