"""Preference pairs from a spoken story corpus (tools/make_story_corpus.py), SpokenSwag-style.

    pairs, counts = story_pairs("corpora/stories", "units/stories.jsonl", prompt="speech", completion="speech")

Per story of the train split: prompt = all sentences but the last; chosen = the true last sentence;
rejected = the last sentence of another train story (`other-story` negatives; a story whose last
sentence reads the same is never drawn). Validation and test stories are never used, neither as
prompts nor as negatives. Speech parts are the story's units cut at the last sentence's first
word with SlamKit's span rule (a run belongs to the span when its END time falls at or after the
word's start: `bisect_left` over the runs' end times); text parts are the sentences.
"""
from __future__ import annotations

import bisect
import json
from pathlib import Path
import numpy as np

from megatron_slm.jsonio import iter_jsonl
from megatron_slm.units.records import iter_records

MODALITIES = ("speech", "text")


class StoryPairError(ValueError):
    """The corpus or units cannot give pairs (one line, names the file)."""


def _stories(corpus: Path, split: str) -> list[dict]:
    path = corpus / "stories.jsonl"
    if not path.is_file():
        raise StoryPairError(f"{path} does not exist (is {corpus} made by tools/make_story_corpus.py?)")
    return [obj for _, obj in iter_jsonl(path, error=StoryPairError) if obj.get("split") == split]


def _words(corpus: Path, split: str) -> dict[str, list[dict]]:
    path = corpus / f"alignments.{split}.jsonl"
    if not path.is_file():
        raise StoryPairError(f"{path} does not exist")
    return {obj["id"]: obj["words"] for _, obj in iter_jsonl(path, error=StoryPairError)}


def split_units(units: list[int], durations: list[int], unit_seconds: float, start: float) -> tuple[list, list]:
    """(units before `start`, units from it on): SlamKit's rule on the runs' end times."""
    ends = np.cumsum(durations) * unit_seconds
    cut = bisect.bisect_left(ends.tolist(), start)
    return units[:cut], units[cut:]


def story_pairs(corpus: str | Path, units_path: str | Path, prompt: str = "speech", completion: str = "speech",
                seed: int = 0) -> tuple[list[dict], dict]:
    """(records for tools/preprocess_data.py preference, counts)."""
    corpus = Path(corpus)
    for name, value in (("prompt", prompt), ("completion", completion)):
        if value not in MODALITIES:
            raise StoryPairError(f"--{name} {value!r}: choose speech or text")
    stories = _stories(corpus, "train")
    words = _words(corpus, "train")
    units = {}
    if "speech" in (prompt, completion):
        units = {r.id: r for r in iter_records(units_path)}
    parts, counts = [], {"stories": len(stories), "pairs": 0, "no_units": 0, "too_short": 0}
    for st in stories:
        sentences = st["sentences"]
        if len(sentences) < 2 or st["id"] not in words:
            counts["too_short"] += 1
            continue
        last_words = len(sentences[-1].split())
        ws = words[st["id"]]
        speech = None
        if units:
            rec = units.get(st["id"])
            if rec is None:
                counts["no_units"] += 1
                continue
            speech = split_units(rec.units, rec.durations, rec.unit_seconds, ws[len(ws) - last_words]["start"])
            if not speech[0] or not speech[1]:
                counts["too_short"] += 1
                continue
        text = (" ".join(sentences[:-1]), " " + sentences[-1])
        parts.append((st["id"], sentences[-1], text, speech))
    rng = np.random.default_rng(seed)
    pairs = []
    for i, (sid, ending, text, speech) in enumerate(parts):
        others = [j for j, p in enumerate(parts) if p[1] != ending]
        if not others:
            continue
        j = int(rng.choice(others))

        def part(which: int, index: int, modality: str):
            _, _, t, s = parts[index]
            return {"units": s[which]} if modality == "speech" else t[which]

        pairs.append({"id": sid, "negative_from": parts[j][0], "prompt": part(0, i, prompt),
                      "chosen": part(1, i, completion), "rejected": part(1, j, completion)})
    counts["pairs"] = len(pairs)
    return pairs, counts


def write_pairs(pairs: list[dict], out: str | Path, units_path: str | Path | None) -> None:
    """The JSONL, and beside it the units' identity sidecar when the pairs hold units."""
    from megatron_slm.units.records import read_meta, write_meta

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(p) + "\n" for p in pairs), encoding="utf-8")
    if units_path is not None:
        write_meta(out, read_meta(units_path))

