"""Word-shuffle: a sanity benchmark from any corpus with units and word alignments.

Positive = an utterance's units; negative = the same words' units in a shuffled order (the gaps
between words stay in place). A model that learnt anything about its language prefers the real
order; a random model is at chance. Inputs pass the same validators as preprocessing.
"""
from __future__ import annotations

from typing import Iterable, Iterator, Sequence

from megatron_slm.eval.benchmarks.spec import Benchmark
from megatron_slm.eval.items import Candidate, Item


def word_segments(units: Sequence[int], durations: Sequence[int], unit_seconds: float,
                  starts: Sequence[float], ends: Sequence[float]) -> tuple[list[list[int]], list[list[int]]]:
    """Split an utterance's units into word segments and the gaps around them.

    A unit belongs to the word whose [start, end) holds its midpoint; returns (gaps, words) with
    len(gaps) == len(words) + 1 (gap i precedes word i)."""
    import numpy as np  # not at module level: the prepare command's --help stays fast

    unit_ends = np.cumsum(durations) * unit_seconds
    mids = unit_ends - np.asarray(durations) * unit_seconds / 2
    gaps: list[list[int]] = [[]]
    segs: list[list[int]] = []
    wi = -1  # index of the word the cursor is in, or between words
    for u, t in zip(units, mids):
        while wi + 1 < len(starts) and t >= starts[wi + 1]:
            wi += 1
            segs.append([])
            gaps.append([])
        if wi >= 0 and t < ends[wi]:
            segs[wi].append(int(u))
        else:
            gaps[wi + 1].append(int(u))
    while len(segs) < len(starts):  # words after the last unit
        segs.append([])
        gaps.append([])
    return gaps, segs


def _collapse(seq: Iterable[int]) -> list[int]:
    out: list[int] = []
    for u in seq:
        if not out or out[-1] != u:
            out.append(u)
    return out


def word_shuffle_inputs(units_path: str, alignments_path: str) -> Iterator:
    """(units record, its validated Alignment) per usable utterance, then (message, reason) per
    line or utterance that is not: the records pass the same validators as preprocessing (a units
    record's types and units < K of its sidecar; words in order and within the record's audio),
    so a bad one is a counted skip. A units file without its sidecar, or an alignments path that
    is none, raises a named error."""
    from megatron_slm.corpus.alignments import AlignmentIndex
    from megatron_slm.corpus.words import AlignmentError, validate
    from megatron_slm.data.prepare import units_record
    from megatron_slm.data.records import RecordError, decode_json_line, iter_lines
    from megatron_slm.units.records import num_units, read_meta

    K = num_units(read_meta(units_path))  # K x n_q for a codec
    align = AlignmentIndex(alignments_path)
    yield from ((msg, reason) for reason, msg in align.problems)
    seen: set[str] = set()
    for where, raw in iter_lines(units_path):
        try:
            rec, _ = units_record(decode_json_line(raw, where), where, K)
            if rec.id in seen:
                raise RecordError(f"{where}: utterance id {rec.id!r} seen before (first kept)", "duplicate_id")
            seen.add(rec.id)
            if rec.id not in align:
                raise RecordError(f"{where}: utterance {rec.id!r} has no alignment in {alignments_path}",
                                  "no_alignment")
            yield rec, validate(align.get(rec.id), rec.audio_seconds)
        except (RecordError, AlignmentError) as e:
            yield str(e), e.reason


def build_word_shuffle(units_path: str, alignments_path: str, seed: int = 0, task: str = "word_shuffle",
                       min_words: int = 3) -> tuple[list[Item], list[tuple[str, str]]]:
    """Items from a corpus: positive = an utterance's units, negative = its word segments in a
    shuffled order (gaps stay in place; consecutive duplicates collapsed again).
    Returns (items, skipped[(message, reason)]); inputs are validated by `word_shuffle_inputs`."""
    import numpy as np

    rng = np.random.default_rng(seed)
    items, skipped = [], []
    for rec, al in word_shuffle_inputs(units_path, alignments_path):
        if isinstance(rec, str):
            skipped.append((rec, al))
            continue
        if rec.codebooks > 1:  # codec frames: a word owns whole frames, moved with all their codebooks
            frames = rec.frames().tolist()
            gaps, segs = word_segments(range(len(frames)), rec.durations, rec.unit_seconds, al.starts, al.ends)
            gaps, segs = ([[u for f in part for u in frames[f]] for part in parts] for parts in (gaps, segs))
        else:
            gaps, segs = word_segments(rec.units, rec.durations, rec.unit_seconds, al.starts, al.ends)
        filled = [i for i, s in enumerate(segs) if s]
        if len(filled) < min_words:
            skipped.append((f"{rec.id}: fewer than {min_words} words with units", "too_few_words"))
            continue
        pos = _collapse([u for i in range(len(segs)) for u in gaps[i] + segs[i]] + gaps[-1])
        for _ in range(100):
            perm = rng.permutation(len(segs))
            neg = _collapse([u for i, j in enumerate(perm) for u in gaps[i] + segs[j]] + gaps[-1])
            if neg != pos:
                break
        else:
            skipped.append((f"{rec.id}: every word order gives the same units", "no_distinct_order"))
            continue
        items.append(Item(id=rec.id, task=task, positive=Candidate(units=pos, text=" ".join(al.words)),
                          negatives=[Candidate(units=neg)], meta={"permutation": perm.tolist()}))
    return items, skipped


WORD_SHUFFLE = Benchmark(
    "word-shuffle", files="a units JSONL (with its sidecar) and the corpus word alignments (no audio)",
    pairing="an utterance and the same utterance with its words' units permuted (seeded)")
