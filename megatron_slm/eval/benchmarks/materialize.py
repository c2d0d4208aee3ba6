"""Benchmark specs -> scored items: every audio path becomes units, texts are kept alongside.

Units come from a precomputed units JSONL (matched by path, or by id = path relative to the
benchmark root) or from the units pipeline with a resumable cache file; either way the units'
identity goes into the items' header, so scoring can refuse a model trained on other units.
"""
from __future__ import annotations

import os
import sys
from collections import defaultdict
from pathlib import Path
from typing import Callable, Optional, Sequence

from megatron_slm.eval.benchmarks.spec import CandSpec, ItemSpec, PrepareError, first_few
from megatron_slm.eval.items import Candidate, Item


class UnitsSource:
    """Units for audio paths: a precomputed units JSONL (matched by path, or by id = path relative
    to `src` without extension), or the units pipeline with a resumable cache file."""

    def __init__(self, identity: dict, lookup: Callable[[Sequence[str]], dict[str, list[int]]],
                 describe: str):
        self.identity, self._lookup, self.describe = identity, lookup, describe

    def units(self, paths: Sequence[str], sources: Optional[dict] = None) -> dict[str, list[int]]:
        """{path or key: units}; `sources` maps keys of audio held elsewhere to their AudioSource."""
        return self._lookup(paths, sources)

    @classmethod
    def from_file(cls, units_path: str, src: Optional[str] = None) -> "UnitsSource":
        from megatron_slm.units.records import compatibility_key, iter_records, read_meta

        base = os.path.dirname(os.path.abspath(units_path))
        by_path, by_id = {}, {}
        for rec in iter_records(units_path):
            by_path[os.path.normpath(os.path.join(base, rec.path))] = rec.units
            by_id[rec.id] = rec.units
        identity = compatibility_key(read_meta(units_path))

        def lookup(paths, sources=None):
            if sources:
                raise PrepareError(f"--units-file {units_path}: precomputed units cannot cover audio held in a "
                                   "dataset; extract them on the fly with --kmeans")
            out, missing = {}, []
            for p in paths:
                key = os.path.normpath(os.path.abspath(p))
                rid = os.path.splitext(os.path.relpath(key, src))[0].replace(os.sep, "/") if src else None
                units = by_path.get(key) or (by_id.get(rid) if rid else None) or by_id.get(Path(p).stem)
                if units is None:
                    missing.append(p)
                else:
                    out[p] = units
            if missing:
                raise PrepareError(f"{units_path}: no units for {len(missing)} benchmark file(s), e.g. {missing[0]} "
                                   "(extract them with tools/extract_units.py --audio-dir <src> --ids relpath)")
            return out

        return cls(identity, lookup, f"precomputed units {units_path}")

    @classmethod
    def from_extractor(cls, extractor, cache_path: str, progress: bool = True) -> "UnitsSource":
        """`extractor` is a units.pipeline.UnitExtractor. Units go through the extraction driver
        into `cache_path` (keyed by absolute audio path), so an interrupted run resumes."""
        from megatron_slm.units.extract import extract_to_jsonl
        from megatron_slm.units.records import compatibility_key, iter_records

        def lookup(paths, sources=None):
            sources = sources or {}
            key = lambda p: p if p in sources else os.path.abspath(p)  # noqa: E731
            keys = sorted({key(p) for p in paths})
            inputs = [sources.get(k, k) for k in keys]
            try:
                summary = extract_to_jsonl(extractor, inputs, keys, cache_path, progress=progress)
            except ValueError as e:
                raise PrepareError(f"{e} (the units cache of this benchmark; delete it to start over)") from None
            if summary.skipped:
                raise PrepareError(f"{len(summary.skipped)} benchmark audio file(s) could not be turned into units: "
                                   + first_few([f"{p} ({why})" for p, why in summary.skipped], "; "))
            for path, why in summary.warnings[:5]:  # kept; silent audio makes its items always tie
                print(f"warning: benchmark audio {path}: {why} (an item whose candidates are all silent always ties)",
                      file=sys.stderr)
            if len(summary.warnings) > 5:
                print(f"warning: {len(summary.warnings) - 5} more in {cache_path}.skipped.tsv", file=sys.stderr)
            done = {rec.id: rec.units for rec in iter_records(cache_path)}
            return {p: done[key(p)] for p in paths}

        inv = extractor.inventory
        return cls(compatibility_key(extractor.meta), lookup,
                   f"units extracted with {inv.kind} k={inv.codebook_size}"
                   + (f" x {inv.num_codebooks} codebooks" if inv.num_codebooks > 1 else ""))


def materialize(specs: Sequence[ItemSpec], source: Optional[UnitsSource]) -> tuple[list[Item], Optional[dict]]:
    """Turn specs into items: audio -> units (text kept alongside)."""
    paths = sorted({c.audio for s in specs for c in s.candidates() if c.audio})
    if paths and source is None:
        raise PrepareError("this benchmark has audio: give --units-from/--kmeans or --units-file")
    held = {c.audio: c.source for s in specs for c in s.candidates() if c.source is not None}
    units = source.units(paths, held) if paths else {}

    def cand(c: CandSpec) -> Candidate:
        return Candidate(units=units[c.audio] if c.audio else None, text=c.text)

    items = []
    for s in specs:
        items.append(Item(id=s.id, task=s.task, part=s.part, positive=cand(s.positive),
                          negatives=[cand(n) for n in s.negatives],
                          prompt=cand(s.prompt) if s.prompt else None, meta=s.meta))
    for it in items:  # an empty unit sequence would make the candidate unscorable
        for c in it.candidates() + ([it.prompt] if it.prompt else []):
            if c.units is not None and not c.units:
                raise PrepareError(f"item {it.id!r}: audio produced no units")
    return items, (source.identity if paths else None)


def dump_summary(n_items: int, out: str, skipped: Sequence[tuple[str, str]], extra: str = "", show: int = 5) -> str:
    """`skipped`: (message, reason) pairs, counted by reason; the first `show` messages follow."""
    lines = [f"wrote {n_items} items to {out}{extra}"]
    if skipped:
        lines.append(f"skipped {len(skipped)}:")
        reasons: dict[str, int] = defaultdict(int)
        for _, r in skipped:
            reasons[r] += 1
        lines += [f"  {n} x {r}" for r, n in sorted(reasons.items())]
        lines += ["first examples:"] + [f"  {m}" for m, _ in skipped[:show]]
    return "\n".join(lines)
