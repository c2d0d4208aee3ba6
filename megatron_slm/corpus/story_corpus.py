"""Build a spoken story corpus: generated stories, espeak-ng speech, exact word alignments,
train/valid/test splits by story, a StoryCloze folder for the test stories, and text-only
stories for pre-training a text LM. Cached: a manifest with the parameters and a content hash.

Layout of the output directory:

    manifest.json               parameters, counts, data_split, file sizes + sha256, content_sha256
    stories.jsonl               one line per spoken story: id, split, plot, hero, voice, sentences
    alignments.jsonl            every story, train then valid then test (data.split = manifest's data_split)
    alignments.<split>.jsonl    the same records, one file per split
    audio/<id>.flac             16 kHz mono speech of the whole story
    ssc/<id>_correct.flac|.txt  test stories (prepare_eval_data.py ssc reads this folder) ...
    ssc/<id>_incorrect.flac|.txt  ... and the same prompt with the ending of another test story
    text_stories.jsonl          {"text": ...}: text-only stories, none equal to a valid/test story

Every story is a pure function of (seed, index) (`stories.generate_story`), so a smaller corpus
is a prefix of a larger one with the same seed. A story whose text repeats an earlier one is
skipped, so no held-out story also occurs in training.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from megatron_slm.corpus.stories import (GENERATOR_VERSION, SPLITS, Story, distractor_ending, generate_story,
                                         split_of, uniform)
from megatron_slm.outputs import MARKER

FORMAT = "megatron-slm-story-corpus"
VERSION = 1
TEXT_STREAM_OFFSET = 10_000_000  # text-only stories come from indices far past any spoken corpus


@dataclass(frozen=True)
class Voice:
    name: str = "en-us"
    speed: int = 165
    pitch: int = 50

    @property
    def label(self) -> str:
        return f"{self.name}-s{self.speed}-p{self.pitch}"


# A little variety per story (rate and pitch of one espeak-ng voice): a few times the synthesis
# work of one voice, since every word is synthesised once per voice and cached.
DEFAULT_VOICES = (Voice("en-us", 165, 50), Voice("en-us", 150, 42), Voice("en-us", 180, 58))


@dataclass(frozen=True)
class CorpusSpec:
    hours: float = 3.0
    seed: int = 0
    valid_fraction: float = 0.06
    test_fraction: float = 0.15
    text_stories: int = 20000
    voices: tuple[Voice, ...] = DEFAULT_VOICES
    sample_rate: int = 16000

    def params(self) -> dict:
        d = dataclasses.asdict(self)
        d["voices"] = [dataclasses.asdict(v) for v in self.voices]
        d["generator_version"] = GENERATOR_VERSION
        return d

    def check(self) -> None:
        if not (self.hours > 0 and np.isfinite(self.hours)):
            raise ValueError(f"--hours must be a positive number, got {self.hours}")
        if not (0 < self.valid_fraction < 1 and 0 < self.test_fraction < 1
                and self.valid_fraction + self.test_fraction < 1):
            raise ValueError("valid and test fractions must be in (0, 1) and sum to less than 1")
        if self.text_stories < 0:
            raise ValueError(f"--text-stories must be >= 0, got {self.text_stories}")
        if not self.voices:
            raise ValueError("at least one voice is needed")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def espeak_version() -> str:
    binary = shutil.which("espeak-ng")
    if binary is None:
        raise RuntimeError("espeak-ng not found on PATH (Debian/Ubuntu: apt-get install espeak-ng)")
    out = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.strip()
    return out.split(" Data at")[0]


def cached_manifest(out: str | Path, spec: CorpusSpec, verify: bool = False) -> Optional[dict]:
    """The manifest of a finished build of `spec` in `out`, or None (absent, other parameters,
    or a file missing / of another size; with `verify`, of another sha256)."""
    path = Path(out) / "manifest.json"
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except ValueError:
        return None
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION or manifest.get("params") != spec.params():
        return None
    for rel, info in manifest.get("files", {}).items():
        f = Path(out) / rel
        if not f.is_file() or f.stat().st_size != info["bytes"] or (verify and _sha256(f) != info["sha256"]):
            return None
    return manifest


def _write_audio(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    import soundfile as sf

    tmp = path.with_name(path.name + ".tmp")
    sf.write(tmp, audio, sample_rate, subtype="PCM_16", format="FLAC")
    os.replace(tmp, path)


def _write_jsonl(path: Path, records) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    os.replace(tmp, path)


def _voice_of(spec: CorpusSpec, story: Story) -> int:
    return int(uniform(f"voice:{spec.seed}:{story.index}") * len(spec.voices))


def spoken_stories(spec: CorpusSpec, seconds_of) -> list[Story]:
    """Stories 0, 1, ... (duplicates of an earlier text skipped) until `seconds_of(story)` sums
    to the corpus length; each gets its split."""
    stories, seen, total, index = [], set(), 0.0, 0
    target = spec.hours * 3600.0
    while total < target:
        story = generate_story(spec.seed, index)
        index += 1
        if story.text in seen:
            continue
        seen.add(story.text)
        story.split = split_of(spec.seed, story.index, spec.valid_fraction, spec.test_fraction)
        total += seconds_of(story)
        stories.append(story)
    return stories


def text_only_stories(spec: CorpusSpec, held_out: set[str]) -> list[str]:
    out, index = [], 0
    while len(out) < spec.text_stories:
        text = generate_story(spec.seed, TEXT_STREAM_OFFSET + index).text
        index += 1
        if text not in held_out:
            out.append(text)
    return out


def build_corpus(out: str | Path, spec: CorpusSpec = CorpusSpec(), progress: bool = True,
                 verify: bool = False) -> dict:
    """Build (or find cached, re-hashing its files with `verify`) the corpus in `out`; returns the manifest."""
    spec.check()
    cached = cached_manifest(out, spec, verify)
    if cached is not None:
        return {**cached, "cached": True}
    from tqdm import tqdm

    from megatron_slm.corpus.synth import EspeakSynth, PauseConfig, Utterance, synthesize

    t0 = time.perf_counter()
    out = Path(out)
    (out / "manifest.json").unlink(missing_ok=True)  # a half-rebuilt directory is never "cached"
    for sub in ("audio", "ssc"):
        if (out / sub).is_dir():
            shutil.rmtree(out / sub)
        (out / sub).mkdir(parents=True)
    synths = [EspeakSynth(v.name, v.speed, v.pitch, spec.sample_rate) for v in spec.voices]
    pauses = PauseConfig()
    audio_of: dict[str, tuple[np.ndarray, list[dict]]] = {}
    bar = tqdm(total=round(spec.hours * 3600), unit="s", desc="synthesising", disable=not progress)

    def seconds_of(story: Story) -> float:
        audio, words = synthesize(Utterance(story.id, story.text), synths[_voice_of(spec, story)], pauses, spec.seed)
        _write_audio(out / "audio" / f"{story.id}.flac", audio, spec.sample_rate)
        audio_of[story.id] = (audio.size / spec.sample_rate, words)
        bar.update(round(audio.size / spec.sample_rate))
        return audio.size / spec.sample_rate

    stories = spoken_stories(spec, seconds_of)
    bar.close()
    by_split = {s: [st for st in stories if st.split == s] for s in SPLITS}
    for s in SPLITS:
        if not by_split[s]:
            raise ValueError(f"--hours {spec.hours}: the {s} split got no story; make the corpus longer")

    alignments = {}
    for st in stories:
        seconds, words = audio_of[st.id]
        alignments[st.id] = {"id": st.id, "audio": f"audio/{st.id}.flac", "text": st.text, "words": words,
                             "split": st.split}
    ordered = [alignments[st.id] for s in SPLITS for st in by_split[s]]
    _write_jsonl(out / "alignments.jsonl", ordered)
    for s in SPLITS:
        _write_jsonl(out / f"alignments.{s}.jsonl", [alignments[st.id] for st in by_split[s]])
    _write_jsonl(out / "stories.jsonl", [
        {"id": st.id, "index": st.index, "split": st.split, "plot": st.plot, "hero": st.hero,
         "voice": spec.voices[_voice_of(spec, st)].label, "sentences": st.sentences, "meta": st.meta}
        for st in stories])

    # StoryCloze-style pairs for the test stories: the same voice and the same prompt audio
    # (pauses are drawn per word in order from the story id's RNG), another story's ending.
    rng = np.random.default_rng([spec.seed, 7])
    ssc = []
    for st in tqdm(by_split["test"], desc="storycloze", unit="story", disable=not progress):
        other = distractor_ending(st, by_split["test"], rng)
        wrong = " ".join([*st.prompt, other.ending])
        audio, _ = synthesize(Utterance(st.id, wrong), synths[_voice_of(spec, st)], pauses, spec.seed)
        shutil.copyfile(out / "audio" / f"{st.id}.flac", out / "ssc" / f"{st.id}_correct.flac")
        _write_audio(out / "ssc" / f"{st.id}_incorrect.flac", audio, spec.sample_rate)
        (out / "ssc" / f"{st.id}_correct.txt").write_text(st.text + "\n")
        (out / "ssc" / f"{st.id}_incorrect.txt").write_text(wrong + "\n")
        ssc.append({"id": st.id, "ending_from": other.id})
    _write_jsonl(out / "ssc" / "pairs.jsonl", ssc)

    held_out = {st.text for st in stories if st.split != "train"}
    texts = text_only_stories(spec, held_out)
    _write_jsonl(out / "text_stories.jsonl", [{"text": t} for t in texts])

    files = {}
    # The output marker records when and by what the folder was written: not content.
    for path in sorted(p for p in out.rglob("*") if p.is_file() and p.name not in ("manifest.json", MARKER)):
        files[str(path.relative_to(out))] = {"bytes": path.stat().st_size, "sha256": _sha256(path)}
    content = hashlib.sha256("".join(f"{k}\t{v['sha256']}\n" for k, v in files.items()).encode()).hexdigest()
    counts = {s: len(by_split[s]) for s in SPLITS}
    manifest = {
        "format": FORMAT, "version": VERSION, "params": spec.params(), "espeak": espeak_version(),
        "stories": counts, "data_split": ",".join(str(counts[s]) for s in SPLITS),
        "seconds": {s: round(sum(audio_of[st.id][0] for st in by_split[s]), 3) for s in SPLITS},
        "words": {s: sum(len(st.text.split()) for st in by_split[s]) for s in SPLITS},
        "storycloze_items": len(ssc), "text_stories": len(texts),
        "content_sha256": content, "files": files, "build_seconds": round(time.perf_counter() - t0, 1)}
    tmp = out / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    os.replace(tmp, out / "manifest.json")  # written last: its presence means a complete corpus
    return {**manifest, "cached": False}
