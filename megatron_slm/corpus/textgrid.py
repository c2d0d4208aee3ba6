"""Montreal Forced Aligner output: Praat TextGrid files (long or short text format), words from
one interval tier; empty intervals are silences and are dropped."""
from __future__ import annotations

import re

import numpy as np

from megatron_slm.corpus.words import Alignment, AlignmentError

_BRACKET = re.compile(r"\[\s*\d*\s*\]")
_TOKEN = re.compile(r'"((?:[^"]|"")*)"|([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)')


def parse_textgrid(text: str, uid: str, where: str, tier: str = "words") -> Alignment:
    """Both Praat text formats reduce to the same stream of strings and numbers once labels
    (`xmin =`, `item [1]:`) are dropped: header, then per tier class, name, xmin, xmax, size and
    size x (xmin, xmax, text)."""
    toks: list = []
    for m in _TOKEN.finditer(_BRACKET.sub(" ", text)):
        toks.append(m.group(1).replace('""', '"') if m.group(1) is not None else float(m.group(2)))
    try:
        if toks[:2] != ["ooTextFile", "TextGrid"]:
            raise AlignmentError(f"{where}: not a Praat TextGrid (header {toks[:2]!r})")
        pos, n_tiers = 5, int(toks[4])
        for _ in range(n_tiers):
            cls, name, size = toks[pos], toks[pos + 1], int(toks[pos + 4])
            pos += 5
            width = 3 if cls == "IntervalTier" else 2
            if name == tier and cls == "IntervalTier":
                names, starts, ends = [], [], []
                for j in range(size):
                    s, e, w = toks[pos + 3 * j: pos + 3 * j + 3]
                    if str(w).strip():
                        names.append(str(w).strip())
                        starts.append(s)
                        ends.append(e)
                return Alignment(uid, names, np.asarray(starts, float), np.asarray(ends, float), where)
            pos += width * size
    except (IndexError, ValueError, TypeError):
        raise AlignmentError(f"{where}: truncated or malformed TextGrid") from None
    raise AlignmentError(f"{where}: no interval tier named {tier!r}")
