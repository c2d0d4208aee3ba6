"""Cross-modal StoryCloze (SlamKit's layout): the story in one modality, its endings in the other.

`<root>/**/<id>_mutual.{wav,txt}`, `<id>_correct.{wav,txt}`, `<id>_incorrect.{wav,txt}`;
s2t = spoken prompt (`_mutual.wav`), text endings; t2s = text prompt (`_mutual.txt`), spoken
endings. The prompt conditions both endings and is never scored itself.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from megatron_slm.eval.benchmarks.spec import Benchmark, CandSpec, ItemSpec, PrepareError, first_few, read_text
from megatron_slm.eval.benchmarks.storycloze import STORY_FILES, story_groups


def read_cross_modal(src: str, direction: str, task: Optional[str] = None) -> list[ItemSpec]:
    """s2t: spoken prompt (<id>_mutual.wav), text endings (<id>_correct/_incorrect.txt);
    t2s: text prompt (<id>_mutual.txt), spoken endings (.wav)."""
    if direction not in ("s2t", "t2s"):
        raise PrepareError(f"direction must be s2t or t2s, got {direction!r}")
    root = Path(src)
    groups = story_groups(root, STORY_FILES)
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
                text = read_text(p)
                if not text:
                    raise PrepareError(f"{p}: empty transcript")
                return CandSpec(text=text)
            return CandSpec(audio=str(p))

        specs.append(ItemSpec(id=key, task=task or f"sc_{direction}", prompt=cand("mutual", p_ext),
                              positive=cand("correct", c_ext), negatives=[cand("incorrect", c_ext)]))
    if incomplete:
        raise PrepareError(f"{src}: {len(incomplete)} stories are incomplete for {direction}: "
                           + first_few(incomplete, "; "))
    if not specs:
        raise PrepareError(f"{src}: no <id>_mutual / _correct / _incorrect story files found")
    return specs


CROSS_MODAL = Benchmark(
    "cross-modal", files="<root>/**/<id>_mutual.{wav,txt}, <id>_correct.{wav,txt}, <id>_incorrect.{wav,txt}",
    pairing="the endings of one story id, each after the story (_mutual) in the other modality",
    read=lambda r: read_cross_modal(r.src, r.direction, r.task))
