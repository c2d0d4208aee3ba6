"""The on-disk format of our datasets, read by training and written by preprocessing.

    <prefix>.bin / .idx          Megatron indexed dataset: one document per sequence
    <prefix>_words.bin / .idx    dynamic interleaved data only: per document int32
                                 [key, n, n token counts, n unit lo, n unit hi]
    <prefix>.meta.json           the sidecar: kind, mode, interleaving, convention ("compat":
                                 slamkit | none; absent = none), counts, and the identity
                                 {"vocab": SpeechVocab.identity(), "units": units compatibility key}

Token ids are uint16 while the vocabulary fits (<= 65500), int32 beyond. A sidecar's identity
is checked wherever two artifacts meet (a blend and the run's tokenizer, an output and the
datasets it must match) by `unit_identity.check_ids`, the one rule with one message.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Optional

import numpy as np

from megatron_slm import conventions, jsonio
from megatron_slm.unit_identity import IdentityError, check_ids, check_units
from megatron_slm.data import interleave
from megatron_slm.data.ragged import gather_ranges

SIDECAR_FORMAT = "megatron-slm-dataset/1"
WORDS_SUFFIX = "_words"
TEXT_KINDS = ("text",)


class DatasetError(ValueError):
    """A dataset cannot be used here (missing, wrong kind, other vocabulary or units)."""


def sidecar_path(prefix: str) -> str:
    return prefix + ".meta.json"


def read_sidecar(prefix: str) -> dict:
    return jsonio.read_sidecar(sidecar_path(prefix), SIDECAR_FORMAT,
                               f"dataset sidecar missing (was {prefix} made by tools/preprocess_data.py?)")


def write_json_atomic(path: str, obj: Any) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)


def token_dtype(vocab_size: int) -> type:
    return np.uint16 if vocab_size <= 65500 else np.int32


# ----------------------------------------------------------------------------- identity

def dataset_identity(vocab, units_identity: Optional[dict]) -> dict:
    """What a dataset was made with: the extended vocabulary and (speech data) the units."""
    return {"vocab": vocab.identity(), "units": units_identity}


def _units_key(units: dict) -> dict:
    from megatron_slm.units.records import with_compat

    return with_compat({k: v for k, v in units.items() if k != "sidecar"})  # where the sidecar was: informational


def recorded_conventions(meta: Optional[dict], where: str) -> list[tuple[str, str]]:
    """[(what, convention)] a dataset sidecar follows: its own (interleaved, speech) and its
    units' (so a dataset made with mixed conventions shows both); none for text data."""
    if not meta or meta.get("kind") in TEXT_KINDS:
        return []
    out = [(where, conventions.recorded(meta))]
    units = (meta.get("identity") or {}).get("units")
    if units:
        out.append((f"the units of {where}", conventions.recorded(units)))
    return out


def content_hash(prefix: str) -> str:
    """sha256 of a dataset's .bin and .idx (for reproducibility checks)."""
    h = hashlib.sha256()
    for suffix in (".bin", ".idx"):
        h.update(Path(prefix + suffix).read_bytes())
    return h.hexdigest()


def check_conventions(prefixes: list[str], icfg) -> None:
    """One compat convention per blend: every speech/interleaved dataset's sidecar (and its units)
    and, for dynamic data, the `data.interleave.compat` that draws it. DatasetError names two that
    differ, unless `data.interleave.allow_mixed_compat`."""
    found: list[tuple[str, str]] = []
    for prefix in prefixes:
        if not os.path.isfile(sidecar_path(prefix)):
            continue  # plain Megatron data (kind gpt), or a missing dataset reported when it is opened
        meta = read_sidecar(prefix)
        found += recorded_conventions(meta, sidecar_path(prefix))
        if meta.get("mode") == "dynamic":
            found.append((f"data.interleave.compat (which draws {prefix})", icfg.compat))
    try:
        conventions.check_same(found, icfg.allow_mixed_compat, "data.interleave.allow_mixed_compat=true")
    except conventions.CompatError as e:
        raise DatasetError(str(e)) from None


def units_identity_of(prefixes: list[str]) -> Optional[dict]:
    """The speech units the datasets `prefixes` were made with (from their sidecars), or None when
    none holds speech. Datasets made with different units are refused: their ids mean different
    sounds, and one model cannot learn both. Their compat convention is `check_conventions`'
    business (it honours data.interleave.allow_mixed_compat)."""
    found: Optional[tuple[str, dict]] = None
    for prefix in prefixes:
        if not os.path.isfile(sidecar_path(prefix)):
            continue
        try:
            units = (read_sidecar(prefix).get("identity") or {}).get("units")
        except ValueError as e:
            raise DatasetError(f"{sidecar_path(prefix)}: unreadable dataset sidecar ({e})") from None
        if not units:
            continue
        units = _units_key(units)
        if isinstance(units.get("extractor"), dict):  # where the model lives is informational
            units["extractor"] = {k: v for k, v in units["extractor"].items() if k != "model"}
        if found is None:
            found = (prefix, units)
            continue
        try:
            check_units(units, found[1], sidecar_path(prefix), sidecar_path(found[0]), compare_compat=False)
        except IdentityError as e:
            raise DatasetError(f"{e}: one blend needs one unit inventory") from None
    return found[1] if found else None


# ----------------------------------------------------------------------------- dynamic layout


def dynamic_records(b: interleave.PreparedBatch) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per document: (text ids ++ unit ids of the aligned range, [key, n, token counts, lo, hi])."""
    layouts, words = [], []
    tok_counts = b.tok_end - b.tok_start
    for d in range(len(b.keys)):
        w0, w1 = int(b.word_starts[d]), int(b.word_starts[d + 1])
        unit_part = int(b.tok_end[w1 - 1])  # the document's unit ids start after its text
        base = int(b.unit_lo[w0])
        end = max(int(b.unit_hi[w1 - 1]), base)
        layouts.append(np.concatenate([b.layout[int(b.layout_starts[d]):unit_part], b.layout[base:end]]))
        words.append(np.concatenate([[b.keys[d], w1 - w0], tok_counts[w0:w1], b.unit_lo[w0:w1] - base,
                                     b.unit_hi[w0:w1] - base]).astype(np.int64))
    return layouts, words


# ----------------------------------------------------------------------------- reading


def check_stored(prefix: str, vocab, expected_kind: str = "gpt") -> tuple[Optional[dict], str]:
    """(sidecar or None, kind) of a stored dataset, after checking that it is complete, holds what
    the blend says, and was made with `vocab`. Reads only small files: the trainer's plan runs it
    before any model is built."""
    for suffix in (".bin", ".idx"):
        if not os.path.isfile(prefix + suffix):
            raise DatasetError(f"{prefix}{suffix} does not exist (an unfinished preprocessing run has no .idx)")
    try:
        meta: Optional[dict] = read_sidecar(prefix)
    except FileNotFoundError:
        if expected_kind != "gpt":
            raise DatasetError(f"{prefix}.meta.json missing; a kind={expected_kind!r} dataset needs the "
                               f"sidecar written by tools/preprocess_data.py (use kind: gpt for plain Megatron data)") from None
        return None, "text"
    except ValueError as e:
        raise DatasetError(f"{sidecar_path(prefix)}: unreadable dataset sidecar ({e})") from None
    kind = meta.get("kind")
    if expected_kind not in ("gpt", kind):
        raise DatasetError(f"{prefix} holds {kind!r} documents but the blend says kind={expected_kind!r}")
    check_ids(meta.get("identity") or {}, dataset_identity(vocab, None), sidecar_path(prefix),
              f"the tokenizer {vocab.source}", compare_units=kind not in TEXT_KINDS, error=DatasetError)
    return meta, kind


class StoredDataset:
    """One stored dataset opened for training: its indexed documents, what its sidecar says, and
    (dynamic interleaved data) the per-word layout. `expected_kind` is the blend's `kind`
    ("gpt": plain Megatron data without a sidecar is accepted as text)."""

    def __init__(self, prefix: str, vocab, expected_kind: str = "gpt", mmap: bool = True) -> None:
        from megatron.core.datasets.indexed_dataset import IndexedDataset

        self.meta, self.kind = check_stored(prefix, vocab, expected_kind)
        self.dynamic = bool(self.meta and self.meta.get("mode") == "dynamic")
        self.indexed = IndexedDataset(prefix, mmap=mmap)
        self.words = IndexedDataset(prefix + WORDS_SUFFIX, mmap=mmap) if self.dynamic else None
        self.path_prefix = prefix

    @property
    def sequence_lengths(self) -> np.ndarray:
        return self.indexed.sequence_lengths

    def get(self, idx: int, offset: int = 0, length: Optional[int] = None) -> np.ndarray:
        return self.indexed.get(idx, offset=offset, length=length)

    def __len__(self) -> int:
        return len(self.indexed)

    def flat(self, which: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(all stored ids of the .bin as one array, per-document starts, lengths) of the "layout"
        or the "words" file: documents are written back to back, so a batch of them is gathered
        with array operations."""
        cached = self.__dict__.setdefault("_flat_cache", {})
        if which not in cached:
            ds, prefix = (self.indexed, self.path_prefix) if which == "layout" else (self.words, self.path_prefix + WORDS_SUFFIX)
            lengths = np.asarray(ds.sequence_lengths, dtype=np.int64)
            cached[which] = (np.memmap(prefix + ".bin", dtype=ds.index.dtype, mode="r"),
                             np.cumsum(lengths) - lengths, lengths)
        return cached[which]

    def prepared_batch(self, docs: np.ndarray) -> interleave.PreparedBatch:
        """The stored words/units of dynamic documents `docs`, as one batch."""
        docs = np.asarray(docs, dtype=np.int64)
        flat, starts, lengths = self.flat("layout")
        layout = gather_ranges(flat, starts[docs], lengths[docs])
        wflat, wstarts, _ = self.flat("words")
        w0 = wstarts[docs]
        keys, n = wflat[w0].astype(np.int64), wflat[w0 + 1].astype(np.int64)
        return interleave.PreparedBatch.from_flat(keys, n, gather_ranges(wflat, w0 + 2, n), gather_ranges(wflat, w0 + 2 + n, n),
                                                  gather_ranges(wflat, w0 + 2 + 2 * n, n), layout, lengths[docs])
