"""Benchmark folders -> scored-item JSONL (megatron_slm.eval.items).

Two steps. A *layout reader* per benchmark turns its public folder layout into `ItemSpec`s (audio
paths and texts per candidate), pairing candidates by the ids the layout names -- never by
directory listing order -- and failing on missing files or incomplete pairs. Then `materialize`
turns every audio path into units (the units pipeline, or a precomputed units JSONL) and writes
items with the units' identity in the header.

Layouts (see docs/eval.md for the download links; each of swuggy, sblimp, ssc, tsc and salmon
also reads the benchmark as a local Hugging Face dataset, eval/hf_datasets.py):
  swuggy       ZeroSpeech 2021 sLM21: <root>/lexical/<split>/{gold.csv, <filename>.wav}; gold.csv
               columns id, filename, voice, frequency, word, correct; a word and its non-word share
               (id, voice). Part: "inter" (word seen in LibriSpeech) or "oov" (frequency 0).
  sblimp       <root>/syntactic/<split>/{gold.csv, <filename>.wav}; columns id, filename, voice,
               type, subtype, transcription, correct; pairs share (type, subtype, id, voice).
               Part: the phenomenon (type).
  ssc / tsc    Spoken / topic StoryCloze: <root>/**/<id>_correct.wav + <id>_incorrect.wav
               (optional <id>_correct.txt / _incorrect.txt transcripts).
  salmon       SALMon: <root>/<part>/sample_<index>_<option>.wav, option 0 the positive, 1.. the
               negatives. Part: the folder (sentiment_consistency, bg_alignment, ...).
  cross-modal  StoryCloze with a prompt (SlamKit layout): <root>/**/<id>_mutual.{wav,txt},
               <id>_correct.{wav,txt}, <id>_incorrect.{wav,txt}; s2t = spoken prompt, text endings;
               t2s = text prompt, spoken endings.
  word-shuffle A sanity benchmark from any corpus with units and word alignments: positive = an
               utterance's units, negative = the same words' units in a shuffled order.
"""
from __future__ import annotations

import csv
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Sequence

import numpy as np

from megatron_slm.eval.items import Candidate, Item, ItemError

SALMON_PARTS = ("bg_alignment", "bg_all_consistency", "bg_domain_consistency", "gender_consistency",
                "rir_consistency", "sentiment_alignment", "sentiment_consistency", "speaker_consistency")


class PrepareError(ItemError):
    """The benchmark folder does not have the expected layout (message names the file)."""


def _first_few(names: list[str], sep: str, n: int = 5) -> str:
    """The first `n` offending names of an error message, with `...` when there are more."""
    return sep.join(names[:n]) + (" ..." if len(names) > n else "")


@dataclass
class CandSpec:
    audio: Optional[str] = None        # a file path, or the key of `source`
    text: Optional[str] = None
    source: Optional[object] = None    # audio.sources.AudioSource: audio held elsewhere (a dataset row)


@dataclass
class ItemSpec:
    id: str
    task: str
    positive: CandSpec
    negatives: list[CandSpec]
    part: Optional[str] = None
    prompt: Optional[CandSpec] = None
    meta: dict = field(default_factory=dict)

    def candidates(self) -> list[CandSpec]:
        return [c for c in (self.prompt, self.positive, *self.negatives) if c is not None]


def _require_audio(path: Path, where: str) -> str:
    if not path.is_file():
        raise PrepareError(f"{where}: audio file {path} is missing")
    return str(path)


def _read_text(path: Path) -> Optional[str]:
    return " ".join(path.read_text(encoding="utf-8").split()) if path.is_file() else None


# --------------------------------------------------------------------------- ZeroSpeech sLM21


def _gold_dir(src: Path, sub: str, split: str) -> Path:
    for d in (src / sub / split, src / split, src):
        if (d / "gold.csv").is_file():
            return d
    raise PrepareError(f"{src}: no {sub}/{split}/gold.csv (expected the ZeroSpeech 2021 dataset root, "
                       f"or its {sub}/{split} folder)")


def _read_gold(path: Path, required: Sequence[str]) -> list[tuple[int, dict]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise PrepareError(f"{path}: missing column(s) {', '.join(missing)} (have {reader.fieldnames})")
        rows = [(lineno, row) for lineno, row in enumerate(reader, 2)]
    for lineno, row in rows:
        if row["correct"] not in ("0", "1"):
            raise PrepareError(f"{path}:{lineno}: field 'correct' must be 0 or 1, got {row['correct']!r}")
    return rows


def _pairs_from_gold(path: Path, rows: list[tuple[int, dict]], key: Callable[[dict], tuple]) -> dict:
    """Group gold rows by `key`; each group must hold exactly one correct row and >= 1 incorrect."""
    groups: dict[tuple, dict[str, list]] = defaultdict(lambda: {"pos": [], "neg": []})
    for lineno, row in rows:
        groups[key(row)]["pos" if row["correct"] == "1" else "neg"].append((lineno, row))
    for k, g in groups.items():
        if len(g["pos"]) != 1 or not g["neg"]:
            lines = sorted(ln for ln, _ in g["pos"] + g["neg"])
            raise PrepareError(f"{path}: lines {lines} (key {'/'.join(k)}): a pair needs exactly one row with "
                               f"correct=1 and at least one with correct=0, found {len(g['pos'])} and {len(g['neg'])}")
    return groups


def _wav(d: Path, filename: str) -> Path:
    return d / (filename if Path(filename).suffix else filename + ".wav")


def _zerospeech_meta(kind: str, split: str, pos: dict, negs: list, fields: Sequence[str]) -> dict:
    """What the official aggregation and the submission files need (eval/zerospeech.py)."""
    meta = {"set": kind, "split": split, "files": [Path(r["filename"]).stem for r in [pos, *negs]]}
    meta.update({f: pos[f] for f in fields if pos.get(f) not in (None, "")})
    return meta


def read_swuggy(src: str, split: str = "dev", task: str = "swuggy") -> list[ItemSpec]:
    d = _gold_dir(Path(src), "lexical", split)
    gold = d / "gold.csv"
    rows = _read_gold(gold, ("id", "filename", "correct"))
    has_voice = "voice" in rows[0][1] if rows else False
    groups = _pairs_from_gold(gold, rows, lambda r: (r["id"], r.get("voice", "")) if has_voice else (r["id"],))
    specs = []
    for k, g in groups.items():
        (pl, pos), negs = g["pos"][0], g["neg"]
        part = None
        if pos.get("frequency") not in (None, ""):
            part = "oov" if int(float(pos["frequency"])) == 0 else "inter"
        specs.append(ItemSpec(
            id="/".join(k), task=task, part=part,
            positive=CandSpec(_require_audio(_wav(d, pos["filename"]), f"{gold}:{pl}"), pos.get("word") or None),
            negatives=[CandSpec(_require_audio(_wav(d, r["filename"]), f"{gold}:{ln}"), r.get("word") or None)
                       for ln, r in negs],
            meta={"voice": pos.get("voice"), "frequency": pos.get("frequency"),
                  "zerospeech": _zerospeech_meta("lexical", split, pos, [r for _, r in negs],
                                                 ("id", "voice", "frequency", "length"))}))
    return specs


def read_sblimp(src: str, split: str = "dev", task: str = "sblimp") -> list[ItemSpec]:
    d = _gold_dir(Path(src), "syntactic", split)
    gold = d / "gold.csv"
    rows = _read_gold(gold, ("id", "filename", "correct", "type"))
    groups = _pairs_from_gold(gold, rows, lambda r: (r["type"], r.get("subtype", ""), r["id"], r.get("voice", "")))
    specs = []
    for k, g in groups.items():
        (pl, pos), negs = g["pos"][0], g["neg"]
        specs.append(ItemSpec(
            id="/".join(x for x in k if x), task=task, part=pos["type"],
            positive=CandSpec(_require_audio(_wav(d, pos["filename"]), f"{gold}:{pl}"), pos.get("transcription") or None),
            negatives=[CandSpec(_require_audio(_wav(d, r["filename"]), f"{gold}:{ln}"), r.get("transcription") or None)
                       for ln, r in negs],
            meta={"subtype": pos.get("subtype"), "voice": pos.get("voice"),
                  "zerospeech": _zerospeech_meta("syntactic", split, pos, [r for _, r in negs],
                                                 ("id", "voice", "type", "subtype"))}))
    return specs


# --------------------------------------------------------------------------- StoryCloze


_SC_NAME = re.compile(r"^(?P<id>.+)_(?P<label>correct|incorrect|mutual)$")


def _story_groups(src: Path, exts: tuple[str, ...]) -> dict[str, dict[str, Path]]:
    """{story key: {"correct"|"incorrect"|"mutual" + ext: path}} for every matching file below src;
    the key is the path relative to src with the label suffix removed."""
    if not src.is_dir():
        raise PrepareError(f"{src}: not a directory")
    groups: dict[str, dict[str, Path]] = defaultdict(dict)
    for p in sorted(src.rglob("*")):
        if p.suffix.lower() not in exts or not p.is_file():
            continue
        m = _SC_NAME.match(p.stem)
        if m:
            key = str(p.relative_to(src).with_name(m["id"])).replace(os.sep, "/")
            groups[key][m["label"] + p.suffix.lower()] = p
    return groups


def read_storycloze(src: str, task: str = "ssc") -> list[ItemSpec]:
    root = Path(src)
    groups = _story_groups(root, (".wav", ".flac", ".txt"))
    audio_ext = lambda g, label: next((g[label + e] for e in (".wav", ".flac") if label + e in g), None)  # noqa: E731
    specs, unpaired = [], []
    for key, g in sorted(groups.items()):
        pos, neg = audio_ext(g, "correct"), audio_ext(g, "incorrect")
        if pos is None and neg is None:
            continue  # only transcripts / prompts
        if pos is None or neg is None:
            unpaired.append(f"{key}_{'correct' if pos is None else 'incorrect'}")
            continue
        specs.append(ItemSpec(id=key, task=task,
                              positive=CandSpec(str(pos), _read_text(pos.with_suffix(".txt"))),
                              negatives=[CandSpec(str(neg), _read_text(neg.with_suffix(".txt")))]))
    if unpaired:
        raise PrepareError(f"{src}: {len(unpaired)} stories lack their pair; missing audio: "
                           + _first_few(unpaired, ", "))
    if not specs:
        raise PrepareError(f"{src}: no <id>_correct.wav / <id>_incorrect.wav pairs found")
    return specs


def read_cross_modal(src: str, direction: str, task: Optional[str] = None) -> list[ItemSpec]:
    """s2t: spoken prompt (<id>_mutual.wav), text endings (<id>_correct/_incorrect.txt);
    t2s: text prompt (<id>_mutual.txt), spoken endings (.wav)."""
    if direction not in ("s2t", "t2s"):
        raise PrepareError(f"direction must be s2t or t2s, got {direction!r}")
    root = Path(src)
    groups = _story_groups(root, (".wav", ".flac", ".txt"))
    p_ext, c_ext = ((".wav", ".txt") if direction == "s2t" else (".txt", ".wav"))
    specs, incomplete = [], []
    for key, g in sorted(groups.items()):
        need = {"mutual" + p_ext, "correct" + c_ext, "incorrect" + c_ext}
        have = {k if not k.endswith(".flac") else k[:-5] + ".wav" for k in g}
        if not need <= have:
            incomplete.append(f"{key} (missing {', '.join(sorted(need - have))})")
            continue
        get = lambda name: g.get(name) or g.get(name.replace(".wav", ".flac"))  # noqa: E731

        def cand(label: str, ext: str) -> CandSpec:
            p = get(label + ext)
            if ext == ".txt":
                text = _read_text(p)
                if not text:
                    raise PrepareError(f"{p}: empty transcript")
                return CandSpec(text=text)
            return CandSpec(audio=str(p))

        specs.append(ItemSpec(id=key, task=task or f"sc_{direction}", prompt=cand("mutual", p_ext),
                              positive=cand("correct", c_ext), negatives=[cand("incorrect", c_ext)]))
    if incomplete:
        raise PrepareError(f"{src}: {len(incomplete)} stories are incomplete for {direction}: "
                           + _first_few(incomplete, "; "))
    if not specs:
        raise PrepareError(f"{src}: no <id>_mutual / _correct / _incorrect story files found")
    return specs


# --------------------------------------------------------------------------- SALMon


_SALMON_NAME = re.compile(r"^(?P<prefix>[A-Za-z]+)_(?P<index>\d+)_(?P<option>\d+)$")


def read_salmon(src: str, parts: Optional[Sequence[str]] = None, task: str = "salmon") -> list[ItemSpec]:
    root = Path(src)
    if not root.is_dir():
        raise PrepareError(f"{src}: not a directory")
    if not parts:
        parts = [p for p in SALMON_PARTS if (root / p).is_dir()]
        if not parts:
            raise PrepareError(f"{src}: none of the SALMon part folders ({', '.join(SALMON_PARTS)}) found")
    specs = []
    for part in parts:
        d = root / part
        if not d.is_dir():
            raise PrepareError(f"{d}: SALMon part folder missing")
        samples: dict[int, dict[int, Path]] = defaultdict(dict)
        for p in sorted(d.glob("*.wav")):
            m = _SALMON_NAME.match(p.stem)
            if not m:
                raise PrepareError(f"{p}: expected a name like sample_<index>_<option>.wav")
            samples[int(m["index"])][int(m["option"])] = p
        if not samples:
            raise PrepareError(f"{d}: no sample_<index>_<option>.wav files")
        for index, opts in sorted(samples.items()):
            if sorted(opts) != list(range(len(opts))) or len(opts) < 2:
                raise PrepareError(f"{d}: sample {index} has options {sorted(opts)}; need 0 (the positive) "
                                   f"and 1.. (negatives) without gaps")
            specs.append(ItemSpec(id=f"{part}/{index}", task=task, part=part,
                                  positive=CandSpec(str(opts[0])),
                                  negatives=[CandSpec(str(opts[o])) for o in range(1, len(opts))]))
    return specs


# --------------------------------------------------------------------------- word-shuffle sanity set


def word_segments(units: Sequence[int], durations: Sequence[int], unit_seconds: float,
                  starts: Sequence[float], ends: Sequence[float]) -> tuple[list[list[int]], list[list[int]]]:
    """Split an utterance's units into word segments and the gaps around them.

    A unit belongs to the word whose [start, end) holds its midpoint; returns (gaps, words) with
    len(gaps) == len(words) + 1 (gap i precedes word i)."""
    unit_ends = np.cumsum(durations) * unit_seconds
    mids = unit_ends - np.asarray(durations) * unit_seconds / 2
    gaps: list[list[int]] = [[]]
    segs: list[list[int]] = []
    wi = -1  # index of the word the cursor is in, or between words
    for u, t in zip(units, mids):
        while wi + 1 < len(starts) and t >= starts[wi + 1]:
            wi += 1
            segs.append([])
            gaps.append([])
        if wi >= 0 and t < ends[wi]:
            segs[wi].append(int(u))
        else:
            gaps[wi + 1].append(int(u))
    while len(segs) < len(starts):  # words after the last unit
        segs.append([])
        gaps.append([])
    return gaps, segs


def _collapse(seq: Iterable[int]) -> list[int]:
    out: list[int] = []
    for u in seq:
        if not out or out[-1] != u:
            out.append(u)
    return out


def word_shuffle_inputs(units_path: str, alignments_path: str) -> Iterator:
    """(units record, its validated Alignment) per usable utterance, then (message, reason) per
    line or utterance that is not: the records pass the same validators as preprocessing (a units
    record's types and units < K of its sidecar; words in order and within the record's audio),
    so a bad one is a counted skip. A units file without its sidecar, or an alignments path that
    is none, raises a named error."""
    from megatron_slm.corpus.alignments import AlignmentIndex
    from megatron_slm.corpus.words import AlignmentError, validate
    from megatron_slm.data.prepare import units_record
    from megatron_slm.data.records import RecordError, decode_json_line, iter_lines
    from megatron_slm.units.records import read_meta

    K = read_meta(units_path)["kmeans"]["k"]
    align = AlignmentIndex(alignments_path)
    yield from ((msg, reason) for reason, msg in align.problems)
    seen: set[str] = set()
    for where, raw in iter_lines(units_path):
        try:
            rec, _ = units_record(decode_json_line(raw, where), where, K)
            if rec.id in seen:
                raise RecordError(f"{where}: utterance id {rec.id!r} seen before (first kept)", "duplicate_id")
            seen.add(rec.id)
            if rec.id not in align:
                raise RecordError(f"{where}: utterance {rec.id!r} has no alignment in {alignments_path}",
                                  "no_alignment")
            yield rec, validate(align.get(rec.id), rec.audio_seconds)
        except (RecordError, AlignmentError) as e:
            yield str(e), e.reason


def build_word_shuffle(units_path: str, alignments_path: str, seed: int = 0, task: str = "word_shuffle",
                       min_words: int = 3) -> tuple[list[Item], list[tuple[str, str]]]:
    """Items from a corpus: positive = an utterance's units, negative = its word segments in a
    shuffled order (gaps stay in place; consecutive duplicates collapsed again).
    Returns (items, skipped[(message, reason)]); inputs are validated by `word_shuffle_inputs`."""
    rng = np.random.default_rng(seed)
    items, skipped = [], []
    for rec, al in word_shuffle_inputs(units_path, alignments_path):
        if isinstance(rec, str):
            skipped.append((rec, al))
            continue
        gaps, segs = word_segments(rec.units, rec.durations, rec.unit_seconds, al.starts, al.ends)
        filled = [i for i, s in enumerate(segs) if s]
        if len(filled) < min_words:
            skipped.append((f"{rec.id}: fewer than {min_words} words with units", "too_few_words"))
            continue
        pos = _collapse([u for i in range(len(segs)) for u in gaps[i] + segs[i]] + gaps[-1])
        for _ in range(100):
            perm = rng.permutation(len(segs))
            neg = _collapse([u for i, j in enumerate(perm) for u in gaps[i] + segs[j]] + gaps[-1])
            if neg != pos:
                break
        else:
            skipped.append((f"{rec.id}: every word order gives the same units", "no_distinct_order"))
            continue
        items.append(Item(id=rec.id, task=task, positive=Candidate(units=pos, text=" ".join(al.words)),
                          negatives=[Candidate(units=neg)], meta={"permutation": perm.tolist()}))
    return items, skipped


# --------------------------------------------------------------------------- audio -> units


class UnitsSource:
    """Units for audio paths: a precomputed units JSONL (matched by path, or by id = path relative
    to `src` without extension), or the units pipeline with a resumable cache file."""

    def __init__(self, identity: dict, lookup: Callable[[Sequence[str]], dict[str, list[int]]],
                 describe: str):
        self.identity, self._lookup, self.describe = identity, lookup, describe

    def units(self, paths: Sequence[str], sources: Optional[dict] = None) -> dict[str, list[int]]:
        """{path or key: units}; `sources` maps keys of audio held elsewhere to their AudioSource."""
        return self._lookup(paths, sources)

    @classmethod
    def from_file(cls, units_path: str, src: Optional[str] = None) -> "UnitsSource":
        from megatron_slm.units.records import compatibility_key, iter_records, read_meta

        base = os.path.dirname(os.path.abspath(units_path))
        by_path, by_id = {}, {}
        for rec in iter_records(units_path):
            by_path[os.path.normpath(os.path.join(base, rec.path))] = rec.units
            by_id[rec.id] = rec.units
        identity = compatibility_key(read_meta(units_path))

        def lookup(paths, sources=None):
            if sources:
                raise PrepareError(f"--units-file {units_path}: precomputed units cannot cover audio held in a "
                                   "dataset; extract them on the fly with --kmeans")
            out, missing = {}, []
            for p in paths:
                key = os.path.normpath(os.path.abspath(p))
                rid = os.path.splitext(os.path.relpath(key, src))[0].replace(os.sep, "/") if src else None
                units = by_path.get(key) or (by_id.get(rid) if rid else None) or by_id.get(Path(p).stem)
                if units is None:
                    missing.append(p)
                else:
                    out[p] = units
            if missing:
                raise PrepareError(f"{units_path}: no units for {len(missing)} benchmark file(s), e.g. {missing[0]} "
                                   "(extract them with tools/extract_units.py --audio-dir <src> --ids relpath)")
            return out

        return cls(identity, lookup, f"precomputed units {units_path}")

    @classmethod
    def from_extractor(cls, extractor, cache_path: str, progress: bool = True) -> "UnitsSource":
        """`extractor` is a units.pipeline.UnitExtractor. Units go through the extraction driver
        into `cache_path` (keyed by absolute audio path), so an interrupted run resumes."""
        from megatron_slm.units.extract import extract_to_jsonl
        from megatron_slm.units.records import compatibility_key, iter_records

        def lookup(paths, sources=None):
            sources = sources or {}
            key = lambda p: p if p in sources else os.path.abspath(p)  # noqa: E731
            keys = sorted({key(p) for p in paths})
            inputs = [sources.get(k, k) for k in keys]
            try:
                summary = extract_to_jsonl(extractor, inputs, keys, cache_path, progress=progress)
            except ValueError as e:
                raise PrepareError(f"{e} (the units cache of this benchmark; delete it to start over)") from None
            if summary.skipped:
                raise PrepareError(f"{len(summary.skipped)} benchmark audio file(s) could not be turned into units: "
                                   + _first_few([f"{p} ({why})" for p, why in summary.skipped], "; "))
            done = {rec.id: rec.units for rec in iter_records(cache_path)}
            return {p: done[key(p)] for p in paths}

        return cls(compatibility_key(extractor.meta), lookup,
                   f"units extracted with {extractor.meta['extractor'].get('name')} k={extractor.meta['kmeans']['k']}")


def materialize(specs: Sequence[ItemSpec], source: Optional[UnitsSource]) -> tuple[list[Item], Optional[dict]]:
    """Turn specs into items: audio -> units (text kept alongside)."""
    paths = sorted({c.audio for s in specs for c in s.candidates() if c.audio})
    if paths and source is None:
        raise PrepareError("this benchmark has audio: give --units-from/--kmeans or --units-file")
    held = {c.audio: c.source for s in specs for c in s.candidates() if c.source is not None}
    units = source.units(paths, held) if paths else {}

    def cand(c: CandSpec) -> Candidate:
        return Candidate(units=units[c.audio] if c.audio else None, text=c.text)

    items = []
    for s in specs:
        items.append(Item(id=s.id, task=s.task, part=s.part, positive=cand(s.positive),
                          negatives=[cand(n) for n in s.negatives],
                          prompt=cand(s.prompt) if s.prompt else None, meta=s.meta))
    for it in items:  # an empty unit sequence would make the candidate unscorable
        for c in it.candidates() + ([it.prompt] if it.prompt else []):
            if c.units is not None and not c.units:
                raise PrepareError(f"item {it.id!r}: audio produced no units")
    return items, (source.identity if paths else None)


def _or_hf(benchmark: str, folder_reader: Callable) -> Callable:
    """The folder layout's reader, or the HF dataset reader when --src is a local HF dataset."""
    def read(a):
        from megatron_slm.eval.hf_datasets import is_hf_dataset, read_hf

        if is_hf_dataset(a.src):
            return read_hf(a.src, a.task or benchmark, a.split, a.parts if benchmark == "salmon" else None)
        return folder_reader(a)
    return read


READERS = {
    "swuggy": _or_hf("swuggy", lambda a: read_swuggy(a.src, a.split, a.task or "swuggy")),
    "sblimp": _or_hf("sblimp", lambda a: read_sblimp(a.src, a.split, a.task or "sblimp")),
    "ssc": _or_hf("ssc", lambda a: read_storycloze(a.src, a.task or "ssc")),
    "tsc": _or_hf("tsc", lambda a: read_storycloze(a.src, a.task or "tsc")),
    "salmon": _or_hf("salmon", lambda a: read_salmon(a.src, a.parts, a.task or "salmon")),
    "cross-modal": lambda a: read_cross_modal(a.src, a.direction, a.task),
}


def dump_summary(n_items: int, out: str, skipped: Sequence[tuple[str, str]], extra: str = "", show: int = 5) -> str:
    """`skipped`: (message, reason) pairs, counted by reason; the first `show` messages follow."""
    lines = [f"wrote {n_items} items to {out}{extra}"]
    if skipped:
        lines.append(f"skipped {len(skipped)}:")
        reasons: dict[str, int] = defaultdict(int)
        for _, r in skipped:
            reasons[r] += 1
        lines += [f"  {n} x {r}" for r, n in sorted(reasons.items())]
        lines += ["first examples:"] + [f"  {m}" for m, _ in skipped[:show]]
    return "\n".join(lines)


__all__ = ["ItemSpec", "CandSpec", "PrepareError", "read_swuggy", "read_sblimp", "read_storycloze",
           "read_salmon", "read_cross_modal", "build_word_shuffle", "word_segments", "UnitsSource",
           "materialize", "READERS", "SALMON_PARTS", "dump_summary"]
