"""The extraction driver: audio files -> a units JSONL + sidecar, sharded over ranks, resumable.

    summary = extract_to_jsonl(extractor, paths, ids, "units/ls.jsonl")   # every rank calls it
    print("\n".join(summary.lines()))                                    # rank 0 has the totals

Used by tools/extract_units.py and by benchmark preparation (tools/prepare_eval_data.py) so that
both resume, shard and report the same way. Each rank appends to its own part file; rank 0
merges them in input order (sharding.py). A units file made by another extractor or k-means
is refused rather than extended.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Sequence

from megatron_slm.units import sharding
from megatron_slm.units.records import compatibility_key, meta_path, portable_path, read_meta, write_meta


@dataclass
class ExtractionSummary:
    out: str
    total: int = 0                      # records in the merged output
    new: int = 0                        # made by this call (rank 0's share on more ranks)
    done_before: int = 0
    world: int = 1
    audio_seconds: float = 0.0          # audio turned into units by this call (rank 0)
    elapsed_s: float = 0.0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason), every rank
    warnings: list[tuple[str, str]] = field(default_factory=list)  # (path, remark) of files kept, every rank

    def lines(self, show: int = 20) -> list[str]:
        from megatron_slm.console import duration
        from megatron_slm.audio.skips import Skipped, reason_counts

        rate = self.audio_seconds / self.elapsed_s if self.elapsed_s > 0 else 0.0
        out = [f"units: {self.total} utterances in {self.out} ({self.new} new on rank 0, {self.done_before} done "
               f"before, {self.world} rank(s)); {self.audio_seconds / 3600:.3f} h audio in {duration(self.elapsed_s)} "
               f"on rank 0 ({rate:.1f} s audio/s); skipped {len(self.skipped)}"
               + (f" ({reason_counts(Skipped(*s) for s in self.skipped)})" if self.skipped else "")
               + (f"; warnings {len(self.warnings)} ({reason_counts(Skipped(*w) for w in self.warnings)})"
                  if self.warnings else "")]
        out += [f"  skipped {p}: {why}" for p, why in self.skipped[:show]]
        if len(self.skipped) > show:
            out.append(f"  ... {len(self.skipped) - show} more in {self.out}.skipped.tsv")
        out += [f"  warning {p}: {why}" for p, why in self.warnings[:show]]
        if len(self.warnings) > show:
            out.append(f"  ... {len(self.warnings) - show} more warnings in {self.out}.skipped.tsv")
        return out


def check_compatible_output(out: str, meta: dict) -> None:
    """Refuse to append units of another extractor/k-means to an existing output."""
    if os.path.exists(meta_path(out)) and compatibility_key(read_meta(out)) != compatibility_key(meta):
        raise ValueError(f"{out} already holds units from a different extractor/k-means "
                         f"(see {meta_path(out)}); choose another output")


def extract_to_jsonl(extractor, paths: Sequence[str], ids: Sequence[str], out: str, progress: bool = True,
                     kmeans_path: str | None = None) -> ExtractionSummary:
    """Extract the units of `paths` (utterance ids `ids`) into `out`, skipping ids already there.
    Collective under torchrun (rank 0 merges); returns the summary (totals on rank 0)."""
    from tqdm import tqdm

    rank, world = sharding.init_dist()
    check_compatible_output(out, extractor.meta)
    out_dir = os.path.dirname(os.path.abspath(out))
    os.makedirs(out_dir, exist_ok=True)
    if rank == 0:
        meta = extractor.meta
        if kmeans_path:  # a codebook that travels with its units file stays findable
            meta = dict(meta, kmeans=dict(meta["kmeans"], path=portable_path(kmeans_path, out_dir)))
        write_meta(out, meta)
    sharding.repair_tail(sharding.part_path(out, rank))
    sharding.barrier()
    done = sharding.done_records(out)
    todo = sharding.shard([i for i in range(len(ids)) if ids[i] not in done], rank, world)
    items = extractor.prepare([paths[i] for i in todo], [ids[i] for i in todo])

    summary = ExtractionSummary(out=out, done_before=len(done), world=world)
    bar = tqdm(total=sum(it.duration for it in items), unit="s",
               desc=f"units[rank {rank}]" if world > 1 else "units", disable=rank != 0 or not progress,
               bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s audio [{elapsed}<{remaining}{postfix}]")
    t0 = time.time()
    with open(sharding.part_path(out, rank), "a", encoding="utf-8") as f:
        for rec in extractor.units_for_items(items):
            rec.path = portable_path(rec.path, out_dir)
            f.write(rec.to_json() + "\n")
            summary.new += 1
            summary.audio_seconds += rec.audio_seconds
            # decoded lengths can exceed the headers' durations by a few samples: keep the bar in range
            bar.update(max(0.0, min(rec.audio_seconds, bar.total - bar.n)))
            if summary.new % 16 == 0:
                f.flush()
                bar.set_postfix_str(f"{summary.audio_seconds / 3600 / max(time.time() - t0, 1e-9):.4f} h audio/s")
    bar.close()
    summary.elapsed_s = time.time() - t0

    # Per-rank skip lists go through files so rank 0 can report them all.
    with open(f"{out}.skipped{rank}.json", "w", encoding="utf-8") as f:
        json.dump({"skipped": [[s.path, s.reason] for s in extractor.skipped],
                   "warnings": [[w.path, w.reason] for w in getattr(extractor, "warnings", [])]}, f)
    sharding.barrier()
    if rank != 0:
        return summary
    for r in range(world):
        with open(f"{out}.skipped{r}.json", encoding="utf-8") as f:
            got = json.load(f)
        summary.skipped += [tuple(x) for x in got["skipped"]]
        summary.warnings += [tuple(x) for x in got["warnings"]]
        os.remove(f"{out}.skipped{r}.json")
    summary.total = sharding.merge(out, ids)
    if summary.skipped or summary.warnings:  # path, reason; kept files' remarks say "kept"
        with open(out + ".skipped.tsv", "w", encoding="utf-8") as f:
            f.writelines(f"{p}\t{why}\n" for p, why in summary.skipped + summary.warnings)
    return summary
