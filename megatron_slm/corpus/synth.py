"""Text -> speech with exact word alignments, using the espeak-ng command-line synthesiser.

Each word is synthesised on its own, its leading/trailing silence trimmed, and the words are
concatenated with short pauses, so every word's [start, end] in the output is known to the
sample: the alignments are exact by construction (the sTinyStories idea, offline and free).
"""
from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import tempfile
import zlib
from pathlib import Path

import numpy as np

_SYNTH_CHARS = re.compile(r"[^\w']+")


@dataclasses.dataclass(frozen=True)
class Utterance:
    id: str
    text: str


@dataclasses.dataclass(frozen=True)
class PauseConfig:
    """Silence inserted around words, in seconds (drawn uniformly from the ranges)."""

    word: tuple[float, float] = (0.06, 0.11)
    comma: float = 0.18  # after a word ending in , ; :
    sentence: float = 0.28  # after a word ending in . ! ?
    edge: float = 0.20  # before the first and after the last word


def read_utterances(path: str | os.PathLike) -> list[Utterance]:
    """Read a story text file: one utterance per line, `#` comments, blank lines between stories.

    A line `id<TAB>text` names its utterance; otherwise ids are `s<story>_<line>` (1-based),
    where a story is a block of lines separated by blank lines.
    """
    out: list[Utterance] = []
    seen: set[str] = set()
    story, line_in_story, prev_blank = 1, 0, False
    for lineno, raw in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if line.startswith("#"):
            continue
        if not line:
            prev_blank = bool(out) or prev_blank
            continue
        if prev_blank:
            story, line_in_story, prev_blank = story + 1, 0, False
        line_in_story += 1
        if "\t" in line:
            uid, text = (part.strip() for part in line.split("\t", 1))
        else:
            uid, text = f"s{story:02d}_{line_in_story:02d}", line
        if not uid or not text or not re.fullmatch(r"[\w.-]+", uid):
            raise ValueError(f"{path}:{lineno}: bad utterance line (need text, or 'id<TAB>text' with id of [A-Za-z0-9_.-])")
        if uid in seen:
            raise ValueError(f"{path}:{lineno}: duplicate utterance id {uid!r}")
        seen.add(uid)
        out.append(Utterance(uid, " ".join(text.split())))
    return out


def split_words(text: str) -> list[str]:
    """Whitespace words; a token with no letter/digit (e.g. '-') is glued to the previous word,
    so `" ".join(words)` reproduces the normalised text and every word is speakable."""
    words: list[str] = []
    for tok in text.split():
        if _SYNTH_CHARS.sub("", tok) or not words:
            words.append(tok)
        else:
            words[-1] = f"{words[-1]} {tok}"
    return words


class EspeakSynth:
    """One espeak-ng voice; returns trimmed mono float32 audio per word, cached by spelling."""

    def __init__(self, voice: str = "en-us", speed: int = 165, pitch: int = 50,
                 sample_rate: int = 16000, trim_db: float = 40.0, margin_s: float = 0.005):
        self.binary = shutil.which("espeak-ng")
        if self.binary is None:
            raise RuntimeError("espeak-ng not found on PATH (Debian/Ubuntu: apt-get install espeak-ng)")
        self.voice, self.speed, self.pitch = voice, speed, pitch
        self.sample_rate, self.trim_db, self.margin_s = sample_rate, trim_db, margin_s
        self._cache: dict[str, np.ndarray] = {}
        self._tmpdir = tempfile.TemporaryDirectory(prefix="espeak_")  # removed with the object

    def word(self, word: str) -> np.ndarray:
        key = _SYNTH_CHARS.sub(" ", word).strip().lower()
        if not key:
            raise ValueError(f"word {word!r} has nothing to pronounce")
        if key not in self._cache:
            self._cache[key] = self._trim(self._run(key))
        return self._cache[key]

    def _run(self, text: str) -> np.ndarray:
        import soundfile as sf

        wav = os.path.join(self._tmpdir.name, "w.wav")
        cmd = [self.binary, "-v", self.voice, "-s", str(self.speed), "-p", str(self.pitch), "-w", wav, text]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"espeak-ng failed for {text!r} (voice {self.voice}): {proc.stderr.strip()}")
        audio, sr = sf.read(wav, dtype="float32", always_2d=True)
        audio = audio.mean(axis=1)
        if sr != self.sample_rate:
            g = np.gcd(sr, self.sample_rate)
            from scipy.signal import resample_poly

            audio = resample_poly(audio, self.sample_rate // g, sr // g).astype(np.float32)
        return audio

    def _trim(self, audio: np.ndarray) -> np.ndarray:
        peak = float(np.abs(audio).max()) if audio.size else 0.0
        if peak == 0.0:
            raise RuntimeError("espeak-ng produced silence")
        loud = np.flatnonzero(np.abs(audio) > peak * 10 ** (-self.trim_db / 20))
        margin = int(self.margin_s * self.sample_rate)
        lo, hi = max(0, loud[0] - margin), min(audio.size, loud[-1] + 1 + margin)
        return audio[lo:hi].copy()


def synthesize(utt: Utterance, synth: EspeakSynth, pauses: PauseConfig = PauseConfig(),
               seed: int = 0) -> tuple[np.ndarray, list[dict]]:
    """Audio for one utterance and its word alignments [{word, start, end}] in seconds.

    Pauses are drawn from an RNG seeded by (seed, utterance id), so output does not depend on
    the order or subset of utterances synthesised (resume gives identical files)."""
    sr = synth.sample_rate
    rng = np.random.default_rng([seed, zlib.crc32(utt.id.encode())])
    pieces: list[np.ndarray] = [np.zeros(int(pauses.edge * sr), np.float32)]
    cursor = pieces[0].size
    words = []
    tokens = split_words(utt.text)
    for i, tok in enumerate(tokens):
        audio = synth.word(tok)
        words.append({"word": tok, "start": round(cursor / sr, 5), "end": round((cursor + audio.size) / sr, 5)})
        pieces.append(audio)
        cursor += audio.size
        if i + 1 == len(tokens):
            gap = pauses.edge
        elif tok[-1] in ".!?":
            gap = pauses.sentence
        elif tok[-1] in ",;:":
            gap = pauses.comma
        else:
            gap = float(rng.uniform(*pauses.word))
        pieces.append(np.zeros(int(gap * sr), np.float32))
        cursor += pieces[-1].size
    audio = np.concatenate(pieces)
    peak = float(np.abs(audio).max())
    if peak > 0.99:  # keep headroom for 16-bit FLAC
        audio *= 0.99 / peak
    return audio, words
