"""Unit records (one JSON object per utterance) and the identity sidecar `<units>.meta.json`.

Record: {"id", "path", "units", "durations", "unit_seconds", "num_frames", "audio_seconds"}
  units        unit ids; consecutive duplicates collapsed when the run deduplicates
  durations    frames per unit (run lengths; all 1 without dedup); sum == num_frames
  unit_seconds seconds per frame (1 / frame rate), so unit j starts at
               sum(durations[:j]) * unit_seconds
A multi-codebook tokenizer (a codec with n_q codebooks of K codes) adds "codebooks": n_q; its
`units` are the frames flattened in codebook order, code c of codebook q stored as unit q*K + c
(what `vocab.UnitInventory.flatten` gives), `durations` has one entry (1) per frame. Records
without the field have one codebook, so their JSON is unchanged.
Sidecar: which tokenizer made the units (`tokenizer`: kind, settings, a hash of its weights;
for k-means units also the extractor/layer/k-means) and under which convention (`compat`:
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
    codebooks: int = 1  # tokens per frame (units holds num_frames * codebooks of them)

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        if self.codebooks == 1:  # one-codebook records keep the fields they always had
            del d["codebooks"]
        return json.dumps(d, separators=(",", ":"))

    def frames(self) -> np.ndarray:
        """[num_frames, codebooks] unit indices of a record without dedup (one row per frame)."""
        return np.asarray(self.units, dtype=np.int64).reshape(-1, self.codebooks)

    def unit_times(self) -> list[tuple[float, float]]:
        """(start, end) seconds of each unit (of each frame, for several codebooks)."""
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
    rec = UnitRecord(**{f: obj[f] for f in RECORD_FIELDS}, codebooks=obj.get("codebooks", 1))
    fields.integer(rec.codebooks, where, "codebooks", lo=1)
    fields.string(rec.id, where, "id")
    fields.string(rec.path, where, "path", empty=True)
    fields.number(rec.unit_seconds, where, "unit_seconds", above=0)
    fields.number(rec.audio_seconds, where, "audio_seconds", lo=0)
    fields.integer(rec.num_frames, where, "num_frames", lo=0)
    fields.integers(rec.units, where, "units", lo=0, hi=num_units)
    fields.integers(rec.durations, where, "durations", lo=1)
    if len(rec.units) != len(rec.durations) * rec.codebooks:
        per = f" x {rec.codebooks} codebooks" if rec.codebooks > 1 else ""
        raise fields.FieldError(where, "durations", f"has {len(rec.durations)} entries{per} but 'units' has {len(rec.units)}")
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
              compat: str = conventions.DEFAULT, weights_sha256: str | None = None) -> dict:
    """The sidecar of k-means units; `weights_sha256`: a hash of the feature model's weights."""
    return {
        "format": META_FORMAT,
        "compat": compat,
        "tokenizer": {"kind": extractor_identity["name"], "codebook_size": k, "num_codebooks": 1,
                      "frame_rate": extractor_identity["frame_rate"], "weights_sha256": weights_sha256,
                      "kmeans_sha256": centroids_sha256},
        "extractor": extractor_identity,
        "frame_rate": extractor_identity["frame_rate"],
        "unit_seconds": 1.0 / extractor_identity["frame_rate"],
        "kmeans": {"k": k, "sha256": centroids_sha256, "path": kmeans_path},
        "deduplicated": collapse,
    }


CODEC_KINDS = ("mimi",)  # tokenizers whose units are codec codes (no k-means, no dedup)


def make_codec_meta(tokenizer: dict, compat: str = conventions.DEFAULT) -> dict:
    """The sidecar of codec units: `tokenizer` holds kind, codebook_size, num_codebooks,
    frame_rate, sample_rate, weights_sha256 and (informational) the model path."""
    return {
        "format": META_FORMAT,
        "compat": compat,
        "tokenizer": tokenizer,
        "frame_rate": tokenizer["frame_rate"],
        "unit_seconds": 1.0 / tokenizer["frame_rate"],
        "deduplicated": False,
    }


def is_codec(meta: dict) -> bool:
    return (meta.get("tokenizer") or {}).get("kind") in CODEC_KINDS


def inventory(meta: dict):
    """The `vocab.UnitInventory` of a sidecar (sidecars written before codecs: one k-means codebook)."""
    from megatron_slm.vocab import UnitInventory

    tok = meta.get("tokenizer")
    if tok is None:
        return UnitInventory(meta["kmeans"]["k"], 1, meta["extractor"]["name"], meta.get("frame_rate"))
    return UnitInventory(tok["codebook_size"], tok["num_codebooks"], tok["kind"], tok.get("frame_rate"))


def read_inventory(path: str | os.PathLike):
    """The `vocab.UnitInventory` of a units file or of its sidecar (`<units>.meta.json`); errors
    name the sidecar."""
    path = os.fspath(path)
    units = path[: -len(".meta.json")] if path.endswith(".meta.json") else path
    meta = read_meta(units)
    try:
        return inventory(meta)
    except (KeyError, TypeError) as e:
        raise ValueError(f"{meta_path(units)}: no unit inventory (field {e} missing or malformed)") from None
    except ValueError as e:
        raise ValueError(f"{meta_path(units)}: {e}") from None


def key_num_units(key: dict) -> int:
    """Units (K x n_q) a compatibility key's tokenizer defines."""
    tok = key.get("tokenizer")
    if "k" not in key and isinstance(tok, dict):
        return int(tok["codebook_size"]) * int(tok.get("num_codebooks", 1))
    return key["k"]


def num_units(meta: dict) -> int:
    """Units in the vocabulary a sidecar's units need (K x n_q)."""
    return inventory(meta).num_units


def compatibility_key(meta: dict) -> dict:
    """The parts of a sidecar that must agree for two unit files to share a vocabulary. Paths
    differ between machines and the compute dtype only flips near-tie frames (float32 on one
    node, bfloat16 on another make the same unit inventory): both are informational. The
    convention is not: padded and unpadded HuBERT inputs give different units. For k-means units
    the key is what it was before tokenizers were recorded, so older sidecars still match; a
    codec's key is its kind, settings and weights hash."""
    if is_codec(meta):
        tok = {k: v for k, v in meta["tokenizer"].items() if k not in ("model", "dtype")}
        return {"tokenizer": tok, "deduplicated": meta["deduplicated"], "compat": conventions.recorded(meta)}
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
