"""What a benchmark is, and what its reader returns.

A *benchmark* (`Benchmark`) has a name, the files (or dataset columns) its public release holds,
and the rule that pairs a positive with its negatives -- always by the ids the layout names, never
by directory listing order. Its reader turns a release into `ItemSpec`s: audio paths and texts per
candidate. `materialize.py` turns those into scored items (units in place of audio).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from megatron_slm.eval.items import ItemError


class PrepareError(ItemError):
    """The benchmark folder does not have the expected layout (message names the file)."""


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


@dataclass(frozen=True)
class ReadRequest:
    """What the user asked a reader for (`tools/prepare_eval_data.py` options)."""
    src: str
    task: Optional[str] = None               # the task label written into the items (default: the benchmark's)
    split: str = "dev"                       # ZeroSpeech split folder
    parts: Optional[Sequence[str]] = None    # SALMon parts (default: all present)
    direction: str = "s2t"                   # cross-modal: s2t or t2s


@dataclass(frozen=True)
class Benchmark:
    name: str
    files: str                               # the folder layout of its public release
    pairing: str                             # how a positive finds its negatives
    read: Optional[Callable[[ReadRequest], list[ItemSpec]]] = None  # None: built from a corpus, not read
    hf_columns: Optional[tuple[str, str]] = None  # (positive, negative) audio columns when published on the HF hub


def first_few(names: list[str], sep: str, n: int = 5) -> str:
    """The first `n` offending names of an error message, with `...` when there are more."""
    return sep.join(names[:n]) + (" ..." if len(names) > n else "")


def require_audio(path: Path, where: str) -> str:
    if not path.is_file():
        raise PrepareError(f"{where}: audio file {path} is missing")
    return str(path)


def read_text(path: Path) -> Optional[str]:
    return " ".join(path.read_text(encoding="utf-8").split()) if path.is_file() else None
