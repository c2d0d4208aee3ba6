"""Files left out of a run (or kept with a remark), and the reason counts a summary prints."""
from __future__ import annotations

import collections
import dataclasses
import re
from typing import Iterable


@dataclasses.dataclass
class Skipped:
    """A file left out (or, in a warnings list, kept but reported) and why."""

    path: str
    reason: str

    @property
    def kind(self) -> str:
        """The reason without its details ("non-finite samples", "truncated", ...): what summaries count."""
        return re.split(r"[:(]", self.reason, maxsplit=1)[0].strip()


def reason_counts(entries: Iterable[Skipped]) -> str:
    """'2 x non-finite samples, 1 x truncated' (most frequent first)."""
    counts = collections.Counter(e.kind for e in entries)
    return ", ".join(f"{n} x {kind}" for kind, n in counts.most_common())
