"""ZeroSpeech 2021 (sLM21) sWUGGY (lexical) and sBLIMP (syntactic): their readers, the official
scoring, and submission files.

Our report's accuracy is per pair: the mean outcome over (word, non-word) pairs of every voice.
The official ZeroSpeech 2021 score aggregates differently, and both are reported side by side:

  1. a pair's score is 1 when the positive's score is higher, 0.5 on a tie, 0 otherwise;
  2. pairs are averaged over voices per item id (lexical: `id`; syntactic: `type, subtype, id`);
  3. the score is the mean over ids; lexical ids are also grouped by frequency band of the word
     in LibriSpeech, with the official bins [0, 1) oov, [1, 5) "1-5", [5, 20) "6-20",
     [20, 100) "21-100", [100, inf) ">100", and "in-vocab" = the mean over the non-oov ids;
     syntactic ids by `type`.

The two agree only when every id has the same number of voices. Items carry what this needs in
`meta["zerospeech"]` (written by the readers below from gold.csv): set, split, id, type, subtype,
frequency and the file names of the positive and negatives.

A submission directory (`--submission DIR`) follows the official layout: `meta.yaml`,
`lexical/<split>.txt`, `syntactic/<split>.txt`, one `<filename> <score>` line per audio file
(file name without folder or extension, score = the candidate's log-likelihood).
"""
from __future__ import annotations

import csv
import math
import os
from collections import defaultdict
from pathlib import Path
from typing import Callable, Optional, Sequence

from megatron_slm.eval.benchmarks.spec import Benchmark, CandSpec, ItemSpec, PrepareError, require_audio


# --------------------------------------------------------------------------- reading gold.csv


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
    if not rows:
        raise PrepareError(f"{path}: no rows after the header (an empty benchmark)")
    marked: dict[str, tuple[int, str]] = {}  # filename -> (line, correct)
    for lineno, row in rows:
        for c in required:  # a short row leaves None in its missing cells
            if (row.get(c) or "").strip() == "":
                raise PrepareError(f"{path}:{lineno}: field {c!r} is empty")
        if row["correct"] not in ("0", "1"):
            raise PrepareError(f"{path}:{lineno}: field 'correct' must be 0 or 1, got {row['correct']!r}")
        freq = row.get("frequency")
        if freq not in (None, ""):
            try:
                ok = math.isfinite(float(freq)) and float(freq) >= 0
            except ValueError:
                ok = False
            if not ok:
                raise PrepareError(f"{path}:{lineno}: field 'frequency' must be a count >= 0, got {freq!r}")
        first = marked.setdefault(row["filename"], (lineno, row["correct"]))
        if first[1] != row["correct"]:
            raise PrepareError(f"{path}:{lineno}: field 'filename' {row['filename']!r} is marked correct={row['correct']} "
                               f"here and correct={first[1]} on line {first[0]}")
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
    """What the official aggregation and the submission files need (below)."""
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
            positive=CandSpec(require_audio(_wav(d, pos["filename"]), f"{gold}:{pl}"), pos.get("word") or None),
            negatives=[CandSpec(require_audio(_wav(d, r["filename"]), f"{gold}:{ln}"), r.get("word") or None)
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
            positive=CandSpec(require_audio(_wav(d, pos["filename"]), f"{gold}:{pl}"), pos.get("transcription") or None),
            negatives=[CandSpec(require_audio(_wav(d, r["filename"]), f"{gold}:{ln}"), r.get("transcription") or None)
                       for ln, r in negs],
            meta={"subtype": pos.get("subtype"), "voice": pos.get("voice"),
                  "zerospeech": _zerospeech_meta("syntactic", split, pos, [r for _, r in negs],
                                                 ("id", "voice", "type", "subtype"))}))
    return specs


SWUGGY = Benchmark(
    "swuggy", files="<root>/lexical/<split>/{gold.csv, <filename>.wav}; gold.csv columns id, filename, voice, "
    "frequency, word, correct", pairing="a word and its non-word share (id, voice); part: 'inter' (word seen in "
    "LibriSpeech) or 'oov' (frequency 0)",
    read=lambda r: read_swuggy(r.src, r.split, r.task or "swuggy"), hf_columns=("positive", "negative"))
SBLIMP = Benchmark(
    "sblimp", files="<root>/syntactic/<split>/{gold.csv, <filename>.wav}; gold.csv columns id, filename, voice, "
    "type, subtype, transcription, correct", pairing="a pair shares (type, subtype, id, voice); part: the "
    "phenomenon (type)",
    read=lambda r: read_sblimp(r.src, r.split, r.task or "sblimp"), hf_columns=("positive", "negative"))


# --------------------------------------------------------------------------- official scoring

BANDS = ((0, 1, "oov"), (1, 5, "1-5"), (5, 20, "6-20"), (20, 100, "21-100"), (100, math.inf, ">100"))
METRIC = "ZeroSpeech 2021: pair scores averaged over voices per id, then over ids"
META_YAML = """\
# ZeroSpeech 2021 submission metadata: fill in the fields marked <...> before submitting
author: <author>
affiliation: <affiliation>
description: {description}
open_source: true
train_set: <training data>
gpu_budget: 0.0
parameters:
  phonetic:
    metric: cosine
    frame_shift: 0.02
  semantic:
    metric: cosine
    pooling: mean
"""


def band(frequency: float) -> str:
    for lo, hi, name in BANDS:
        if lo <= frequency < hi:
            return name
    raise ValueError(f"frequency {frequency} is negative")


def pair_score(positive: float, negative: float) -> float:
    return 1.0 if positive > negative else 0.5 if positive == negative else 0.0


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs)


def official(items: Sequence, scores: Sequence) -> Optional[dict]:
    """The official aggregation of one benchmark's items and their scores (same order), or None
    when the items do not come from a ZeroSpeech gold.csv."""
    zs = [it.meta.get("zerospeech") for it in items]
    if not zs or any(z is None for z in zs):
        return None
    kind = zs[0]["set"]
    per_id: dict[tuple, list[float]] = defaultdict(list)
    info: dict[tuple, dict] = {}
    for z, s in zip(zs, scores):
        key = (z["id"],) if kind == "lexical" else (z["type"], z.get("subtype", ""), z["id"])
        for neg in s.negatives:  # one pair per negative (the gold pairs one with one)
            per_id[key].append(pair_score(s.positive, neg))
        info[key] = z
    id_scores = {k: _mean(v) for k, v in per_id.items()}
    out = {"metric": METRIC, "score": _mean(list(id_scores.values())), "n_ids": len(id_scores),
           "n_pairs": sum(map(len, per_id.values())), "set": kind, "split": zs[0].get("split")}
    groups: dict[str, list[float]] = defaultdict(list)
    if kind == "lexical" and all("frequency" in z for z in info.values()):
        for k, v in id_scores.items():
            groups[band(float(info[k]["frequency"]))].append(v)
        order = [name for _, _, name in BANDS if name in groups]
        out["by_frequency"] = {b: {"score": _mean(groups[b]), "n": len(groups[b])} for b in order}
        invocab = [v for k, v in id_scores.items() if band(float(info[k]["frequency"])) != "oov"]
        out["invocab"] = _mean(invocab) if invocab else None
    elif kind == "syntactic":
        for k, v in id_scores.items():
            groups[info[k]["type"]].append(v)
        out["by_type"] = {t: {"score": _mean(v), "n": len(v)} for t, v in sorted(groups.items())}
    return out


def _scores_by_task(scores: Sequence) -> dict[str, list]:
    out: dict[str, list] = defaultdict(list)
    for s in scores:
        out[s.task].append(s)
    return out


def add_to_summary(summary: dict, sets: Sequence, scores: Sequence) -> None:
    """Put the official score next to each ZeroSpeech task's per-pair accuracy in the report."""
    by_task = _scores_by_task(scores)
    for task, item_set in sets:
        result = official(item_set.items, by_task.get(task, []))
        if result is not None and task in summary:
            summary[task]["zerospeech2021"] = result


def table_rows(entry: dict) -> list[tuple[str, str, str, str]]:
    """Extra rows of the text table under a task's per-pair accuracy row."""
    z = entry.get("zerospeech2021")
    if not z:
        return []
    rows = [("  ZeroSpeech 2021 (per id)", str(z["n_ids"]), f"{100 * z['score']:.2f}", "")]
    for name, g in (z.get("by_frequency") or z.get("by_type") or {}).items():
        rows.append((f"    {name}", str(g["n"]), f"{100 * g['score']:.2f}", ""))
    if z.get("invocab") is not None:
        rows.append(("    in-vocab", str(sum(g["n"] for b, g in z["by_frequency"].items() if b != "oov")),
                     f"{100 * z['invocab']:.2f}", ""))
    return rows


def submission_lines(items: Sequence, scores: Sequence) -> list[tuple[str, float]]:
    """(filename, score) of every audio file of a ZeroSpeech benchmark."""
    out = []
    for it, s in zip(items, scores):
        files = it.meta["zerospeech"]["files"]
        out += list(zip(files, [s.positive, *s.negatives]))
    return out


def write_submission(directory: str, sets: Sequence, scores: Sequence, description: str) -> list[str]:
    """Write `<dir>/{lexical,syntactic}/<split>.txt` for the ZeroSpeech sets among `sets`, and a
    `meta.yaml` to complete when there is none. Returns the files written; raises ValueError when
    no set is a ZeroSpeech benchmark or two sets fill the same file."""
    by_task = _scores_by_task(scores)
    files: dict[str, list[tuple[str, float]]] = {}
    for task, item_set in sets:
        zs = item_set.items[0].meta.get("zerospeech") if item_set.items else None
        if zs is None:
            continue
        rel = os.path.join(zs["set"], f"{zs.get('split') or 'dev'}.txt")
        if rel in files:
            raise ValueError(f"--submission: two benchmarks give {rel} (score one {zs['set']} set per split)")
        files[rel] = submission_lines(item_set.items, by_task.get(task, []))
    if not files:
        raise ValueError("--submission: none of the scored benchmarks comes from a ZeroSpeech 2021 gold.csv "
                         "(prepare sWUGGY/sBLIMP from their lexical/ and syntactic/ folders)")
    written = []
    for rel, lines in sorted(files.items()):
        path = os.path.join(directory, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.writelines(f"{name} {score!r}\n" for name, score in sorted(lines))
        os.replace(path + ".tmp", path)
        written.append(path)
    meta = os.path.join(directory, "meta.yaml")
    if not os.path.exists(meta):
        with open(meta, "w", encoding="utf-8") as f:
            f.write(META_YAML.format(description=_yaml_str(description)))
        written.append(meta)
    return written


def _yaml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
