"""SALMon: acoustic consistency and alignment, one folder per part.

Layout: `<root>/<part>/sample_<index>_<option>.wav`; option 0 is the positive, 1.. the
negatives, without gaps. The part is the folder (sentiment_consistency, bg_alignment, ...).
"""
from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path
from typing import Optional, Sequence

from megatron_slm.eval.benchmarks.spec import Benchmark, CandSpec, ItemSpec, PrepareError

SALMON_PARTS = ("bg_alignment", "bg_all_consistency", "bg_domain_consistency", "gender_consistency",
                "rir_consistency", "sentiment_alignment", "sentiment_consistency", "speaker_consistency")
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


SALMON = Benchmark(
    "salmon", files="<root>/<part>/sample_<index>_<option>.wav",
    pairing="the options of one sample index within a part: option 0 the positive, 1.. the negatives",
    read=lambda r: read_salmon(r.src, r.parts, r.task or "salmon"), hf_columns=("positive_audio", "negative_audio"))
