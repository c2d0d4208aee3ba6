"""Which conventions an artifact follows: SlamKit's (the code the released SIMS models were
trained and scored with) or this project's earlier rules. One name per artifact, recorded in the
units sidecar, the dataset sidecar and the eval report.

  slamkit  HuBERT input padded with 40 zero samples each side; a speech span owns the unit runs
           whose END time falls inside its words' [start, end]; SlamKit's poisson / span /
           random samplers (in distribution); every word keeps its leading space, a speech span
           without units still gets its marker; BOS only where the tokenizer adds one;
           restrict=speech keeps BOS and EOS in the softmax.
  none     no HuBERT padding; runs with a frame centre inside the span; exact-eta poisson spans;
           the first word without a space, unit-less spans become text; restrict=speech is a
           softmax over the units only.

Artifacts written before the switch existed carry no field and were made with `none`.
Stdlib only: the command-line tools import it before parsing their arguments.
"""
from __future__ import annotations

from typing import Iterable, Optional

SLAMKIT = "slamkit"
NONE = "none"
CHOICES = (SLAMKIT, NONE)
DEFAULT = SLAMKIT      # new units, datasets and recipes reproduce SIMS
LEGACY = NONE          # what an artifact without the field was made with

HELP = ("conventions to follow: slamkit (SlamKit's, what the released SIMS models were trained and "
        "scored with; default) or none (this project's earlier rules); recorded in the output's sidecar")


class CompatError(ValueError):
    """Artifacts made under different conventions meet without an explicit override."""


def recorded(obj: Optional[dict], key: str = "compat") -> str:
    """The convention a sidecar / identity dict records (`none` when it predates the field)."""
    value = (obj or {}).get(key)
    return LEGACY if value is None else str(value)


def check_name(value: str, where: str) -> str:
    if value not in CHOICES:
        raise CompatError(f"{where}={value!r}: choose one of {', '.join(CHOICES)}")
    return value


def check_same(conventions: Iterable[tuple[str, str]], allow_mixed: bool, override: str) -> Optional[str]:
    """The one convention of [(where, convention)], or CompatError naming two that differ (unless
    `allow_mixed`, the user's explicit `override` flag/key). None when the list is empty."""
    seen: dict[str, str] = {}
    for where, conv in conventions:
        seen.setdefault(conv, where)
    if len(seen) > 1 and not allow_mixed:
        (a, wa), (b, wb) = list(seen.items())[:2]
        raise CompatError(f"{wa} follows compat={a} but {wb} follows compat={b}: units, interleaving and scoring "
                          f"differ between the two (re-make one of them with the other --compat, or pass {override} "
                          f"to combine them anyway)")
    return next(iter(seen), None)
