"""Unit records (one JSON object per utterance) and the identity sidecar `<units>.meta.json`.

Record: {"id", "path", "units", "durations", "unit_seconds", "num_frames", "audio_seconds"}
  units        unit ids; consecutive duplicates collapsed when the run deduplicates
  durations    frames per unit (run lengths; all 1 without dedup); sum == num_frames
  unit_seconds seconds per frame (1 / frame rate), so unit j starts at
               sum(durations[:j]) * unit_seconds
Sidecar: which extractor/layer/k-means produced the units and under which convention (`compat`:
slamkit pads the HuBERT input as SlamKit does; a sidecar without the field means none), see
docs/units.md.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Iterator, Sequence

import numpy as np

from megatron_slm import conventions
from megatron_slm import fields
from megatron_slm.jsonio import iter_jsonl, read_sidecar

META_FORMAT = "megatron-slm-units/1"
RECORD_FIELDS = ("id", "path", "units", "durations", "unit_seconds", "num_frames", "audio_seconds")


def dedup(units: Sequence[int] | np.ndarray) -> tuple[list[int], list[int]]:
    """Collapse consecutive duplicates: [5,5,7,5] -> ([5,7,5], [2,1,1])."""
    u = np.asarray(units, dtype=np.int64).reshape(-1)
    if u.size == 0:
        return [], []
    starts = np.flatnonzero(np.concatenate(([True], u[1:] != u[:-1])))
    durations = np.diff(np.concatenate((starts, [u.size])))
    return u[starts].tolist(), durations.tolist()


def expand(units: Sequence[int], durations: Sequence[int]) -> list[int]:
    """Inverse of `dedup`."""
    return np.repeat(np.asarray(units, dtype=np.int64), np.asarray(durations, dtype=np.int64)).tolist()


@dataclasses.dataclass
class UnitRecord:
    id: str
    path: str
    units: list[int]
    durations: list[int]
    unit_seconds: float
    num_frames: int
    audio_seconds: float

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), separators=(",", ":"))

    def unit_times(self) -> list[tuple[float, float]]:
        """(start, end) seconds of each unit."""
        ends = np.cumsum(self.durations) * self.unit_seconds
        starts = ends - np.asarray(self.durations) * self.unit_seconds
        return list(zip(starts.tolist(), ends.tolist()))


def portable_path(path: str, base_dir: str) -> str:
    """`path` relative to `base_dir` when it lies under it (a corpus that travels with its units
    file), else absolute."""
    path, base_dir = os.path.abspath(path), os.path.abspath(base_dir)
    return os.path.relpath(path, base_dir) if os.path.commonpath([path, base_dir]) == base_dir else path


def make_record(uid: str, path: str, frame_units: np.ndarray, unit_seconds: float, audio_seconds: float,
                collapse: bool = True) -> UnitRecord:
    frame_units = np.asarray(frame_units, dtype=np.int64)
    if collapse:
        units, durations = dedup(frame_units)
    else:
        units, durations = frame_units.tolist(), [1] * int(frame_units.size)
    return UnitRecord(uid, path, units, durations, unit_seconds, int(frame_units.size), round(audio_seconds, 6))


def parse_record(obj: Any, where: str, num_units: int | None = None) -> UnitRecord:
    """Validate one decoded JSON object (megatron_slm/fields.py: exact types, never converted);
    `where` is 'file:line' for the error message. With `num_units`, unit ids must lie in
    [0, num_units). Raises ValueError (a FieldError naming the field)."""
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    for name in RECORD_FIELDS:
        if name not in obj:
            raise ValueError(f"{where}: missing field {name!r}")
    rec = UnitRecord(**{f: obj[f] for f in RECORD_FIELDS})
    fields.string(rec.id, where, "id")
    fields.string(rec.path, where, "path", empty=True)
    fields.number(rec.unit_seconds, where, "unit_seconds", above=0)
    fields.number(rec.audio_seconds, where, "audio_seconds", lo=0)
    fields.integer(rec.num_frames, where, "num_frames", lo=0)
    fields.integers(rec.units, where, "units", lo=0, hi=num_units)
    fields.integers(rec.durations, where, "durations", lo=1)
    if len(rec.units) != len(rec.durations):
        raise fields.FieldError(where, "durations", f"has {len(rec.durations)} entries but 'units' has {len(rec.units)}")
    if sum(rec.durations) != rec.num_frames:
        raise fields.FieldError(where, "num_frames", f"is {rec.num_frames} but durations sum to {sum(rec.durations)}")
    return rec


def iter_records(path: str | os.PathLike, tolerate_truncated_tail: bool = False) -> Iterator[UnitRecord]:
    """Records of a units JSONL. With `tolerate_truncated_tail`, an unparsable *last* line (a run
    killed mid-write) is ignored instead of raising, which is what resume needs."""
    for where, obj in iter_jsonl(path, tolerate_truncated_tail=tolerate_truncated_tail):
        yield parse_record(obj, where)


def meta_path(units_path: str | os.PathLike) -> str:
    return os.fspath(units_path) + ".meta.json"


def make_meta(extractor_identity: dict, k: int, centroids_sha256: str, kmeans_path: str | None, collapse: bool,
              compat: str = conventions.DEFAULT) -> dict:
    return {
        "format": META_FORMAT,
        "compat": compat,
        "extractor": extractor_identity,
        "frame_rate": extractor_identity["frame_rate"],
        "unit_seconds": 1.0 / extractor_identity["frame_rate"],
        "kmeans": {"k": k, "sha256": centroids_sha256, "path": kmeans_path},
        "deduplicated": collapse,
    }


def compatibility_key(meta: dict) -> dict:
    """The parts of a sidecar that must agree for two unit files to share a vocabulary. Paths
    differ between machines and the compute dtype only flips near-tie frames (float32 on one
    node, bfloat16 on another make the same unit inventory): both are informational. The
    convention is not: padded and unpadded HuBERT inputs give different units."""
    ext = {k: v for k, v in meta["extractor"].items() if k not in ("model", "dtype")}
    return {"extractor": ext, "k": meta["kmeans"]["k"], "sha256": meta["kmeans"]["sha256"],
            "deduplicated": meta["deduplicated"], "compat": conventions.recorded(meta)}


def with_compat(key: dict) -> dict:
    """A stored compatibility key with its convention explicit (keys written before the field
    existed were made with `none`), so old and new keys compare field by field."""
    return {**key, "compat": conventions.recorded(key)}


def write_meta(units_path: str | os.PathLike, meta: dict) -> None:
    tmp = meta_path(units_path) + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, meta_path(units_path))


def read_meta(units_path: str | os.PathLike) -> dict:
    """The sidecar of a units file; raises with the file name when absent or malformed."""
    return read_sidecar(meta_path(units_path), META_FORMAT,
                        f"identity sidecar missing for {units_path} (written by tools/extract_units.py)")


def check_compatible(paths: Sequence[str | os.PathLike]) -> dict:
    """Raise if unit files were made by different extractors/codebooks; return the shared meta."""
    metas = [read_meta(p) for p in paths]
    ref = compatibility_key(metas[0])
    for p, m in zip(paths[1:], metas[1:]):
        if compatibility_key(m) != ref:
            raise ValueError(f"{p}: units are incompatible with {paths[0]} "
                             f"({compatibility_key(m)} vs {ref})")
    return metas[0]
