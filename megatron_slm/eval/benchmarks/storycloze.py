"""Spoken and topic StoryCloze (sSC, tSC): one story, a correct and an incorrect ending.

Layout: `<root>/**/<id>_correct.wav` + `<id>_incorrect.wav` (or .flac), optional
`<id>_correct.txt` / `_incorrect.txt` transcripts. The story id is the path below the root
without the label, so stories in sub-folders never collide.
"""
from __future__ import annotations

import os
import re
from collections import defaultdict
from pathlib import Path

from megatron_slm.eval.benchmarks.spec import Benchmark, CandSpec, ItemSpec, PrepareError, first_few, read_text

_SC_NAME = re.compile(r"^(?P<id>.+)_(?P<label>correct|incorrect|mutual)$")
STORY_FILES = (".wav", ".flac", ".txt")


def story_groups(src: Path, exts: tuple[str, ...]) -> dict[str, dict[str, Path]]:
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
    groups = story_groups(root, STORY_FILES)
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
                              positive=CandSpec(str(pos), read_text(pos.with_suffix(".txt"))),
                              negatives=[CandSpec(str(neg), read_text(neg.with_suffix(".txt")))]))
    if unpaired:
        raise PrepareError(f"{src}: {len(unpaired)} stories lack their pair; missing audio: "
                           + first_few(unpaired, ", "))
    if not specs:
        raise PrepareError(f"{src}: no <id>_correct.wav / <id>_incorrect.wav pairs found")
    return specs


_FILES = "<root>/**/<id>_correct.wav + <id>_incorrect.wav (optional <id>_correct.txt / _incorrect.txt transcripts)"
_PAIRING = "the correct and incorrect ending of one story id (the path below the root)"
SSC = Benchmark("ssc", files=_FILES, pairing=_PAIRING, read=lambda r: read_storycloze(r.src, r.task or "ssc"),
                hf_columns=("positive", "negative"))
TSC = Benchmark("tsc", files=_FILES, pairing=_PAIRING, read=lambda r: read_storycloze(r.src, r.task or "tsc"),
                hf_columns=("positive", "negative"))
