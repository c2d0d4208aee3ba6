"""Rank sharding, resume and merge for unit extraction.

Each rank appends finished records to its own part file `<out>.part<rank>.jsonl` (flushed per
batch). On (re)start every rank reads all existing part files and the merged output, skips
ids already done, and works on its share of the rest. Rank 0 merges parts into `<out>` in
input order, dropping duplicates, and removes the parts. A run killed at any point, with any
world size, resumes without duplicates: a half-written last line is cut off before appending.
"""
from __future__ import annotations

import glob
import os
from typing import Sequence

import torch.distributed as dist

from megatron_slm.units.records import UnitRecord, iter_records


def dist_env() -> tuple[int, int]:
    """(rank, world_size) from the torchrun environment; (0, 1) when not launched by torchrun."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def init_dist() -> tuple[int, int]:
    rank, world = dist_env()
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")  # only barriers: gloo works on CPU and GPU hosts
    return rank, world


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def part_path(out: str, rank: int) -> str:
    return f"{out}.part{rank}.jsonl"


def existing_parts(out: str) -> list[str]:
    return sorted(glob.glob(glob.escape(out) + ".part*.jsonl"))


def repair_tail(path: str) -> None:
    """Cut a partial last line (left by a killed writer) so appending stays valid JSONL."""
    if not os.path.exists(path):
        return
    with open(path, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)


def done_records(out: str) -> dict[str, UnitRecord]:
    """Records already finished: the merged output first, then part files (first one wins)."""
    done: dict[str, UnitRecord] = {}
    for path in ([out] if os.path.exists(out) else []) + existing_parts(out):
        for rec in iter_records(path, tolerate_truncated_tail=True):
            done.setdefault(rec.id, rec)
    return done


def shard(indices: Sequence[int], rank: int, world: int) -> list[int]:
    return [i for n, i in enumerate(indices) if n % world == rank]


def merge(out: str, order: Sequence[str]) -> int:
    """Write `<out>` with every finished record once, in `order` (then any others), remove parts."""
    done = done_records(out)
    ordered = [i for i in order if i in done] + sorted(set(done) - set(order))
    tmp = out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for uid in ordered:
            f.write(done[uid].to_json() + "\n")
    os.replace(tmp, out)
    for p in existing_parts(out):
        os.remove(p)
    return len(ordered)
