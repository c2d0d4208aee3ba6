"""ZeroSpeech 2021 (sLM21) scoring of sWUGGY (lexical) and sBLIMP (syntactic), and submission files.

Our report's accuracy is per pair: the mean outcome over (word, non-word) pairs of every voice.
The official ZeroSpeech 2021 score aggregates differently, and both are reported side by side:

  1. a pair's score is 1 when the positive's score is higher, 0.5 on a tie, 0 otherwise;
  2. pairs are averaged over voices per item id (lexical: `id`; syntactic: `type, subtype, id`);
  3. the score is the mean over ids; lexical ids are also grouped by frequency band of the word
     in LibriSpeech, with the official bins [0, 1) oov, [1, 5) "1-5", [5, 20) "6-20",
     [20, 100) "21-100", [100, inf) ">100", and "in-vocab" = the mean over the non-oov ids;
     syntactic ids by `type`.

The two agree only when every id has the same number of voices. Items carry what this needs in
`meta["zerospeech"]` (written by eval/prepare.py from gold.csv): set, split, id, type, subtype,
frequency and the file names of the positive and negatives.

A submission directory (`--submission DIR`) follows the official layout: `meta.yaml`,
`lexical/<split>.txt`, `syntactic/<split>.txt`, one `<filename> <score>` line per audio file
(file name without folder or extension, score = the candidate's log-likelihood).
"""
from __future__ import annotations

import math
import os
from collections import defaultdict
from typing import Optional, Sequence

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
