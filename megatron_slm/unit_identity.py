"""What a model's token ids mean, as recorded beside every artifact, and the one check that two
records agree.

A speech unit id only means something together with the tokenizer that made it: ids from another
extractor, layer, k-means or codec are other sounds, so every place where two artifacts meet
(a dataset and the run's tokenizer, benchmark items or prompts and the model, a vocoder and the
model) compares their records here, with one message naming both sides.

Stored forms, all read unchanged:
  units sidecar (`<units>.jsonl.meta.json`)   reduced to its compatibility key by units/records.py
  dataset sidecar (`<prefix>.meta.json`)      {"identity": {"vocab": ..., "units": key + "sidecar"}}
  run / converted checkpoint (`slm_model.json`) and HF export (`slm_identity.json`)
                                              {"vocab": SpeechVocab.identity(), "units": key or null}
A units key is k-means units' {"extractor": {...}, "k", "sha256", "deduplicated", "compat"} or a
codec's {"tokenizer": {"kind", "codebook_size", "num_codebooks", ..., "weights_sha256"}, ...};
`UnitIdentity` reads both into one typed record (kind, settings, K, hashes, dedup, convention),
so a new tokenizer kind adds fields there, not another comparison.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from megatron_slm import conventions

VOCAB_KEYS = ("text_vocab_sha256", "text_vocab_size")
# where a file or model was found differs between machines: never part of what units mean
INFORMATIONAL = ("sidecar", "extractor.model", "tokenizer.model")


class IdentityError(ValueError):
    """Two artifacts were made with different vocabularies or speech units."""


def _flatten(d: Mapping, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


@dataclass(frozen=True)
class UnitIdentity:
    """One stored units key, typed. `key` is the record exactly as stored (written back unchanged);
    the other fields are what it says, whichever tokenizer made it."""
    key: Mapping[str, Any] = field(repr=False)
    kind: Optional[str]                 # tokenizer kind: hubert, mel (k-means units), mimi (codec) ...
    settings: Mapping[str, Any]         # the extractor's or codec's settings (layer, sample rate, ...)
    num_units: Optional[int]            # K (x codebooks for a codec): unit ids the vocabulary needs
    codebook_sha256: Optional[str]      # the k-means centroids
    weights_sha256: Optional[str]       # the feature model or codec weights, where recorded
    deduplicated: Optional[bool]
    compat: str                         # the convention (a key without it was made with `none`)

    @classmethod
    def from_key(cls, key: Mapping[str, Any]) -> "UnitIdentity":
        tok = key.get("tokenizer") if isinstance(key.get("tokenizer"), Mapping) else None
        ext = key.get("extractor") if isinstance(key.get("extractor"), Mapping) else None
        if tok is not None:
            k, n_q = tok.get("codebook_size"), tok.get("num_codebooks") or 1
            num_units = int(k) * int(n_q) if k is not None else None
            kind, settings = tok.get("kind"), tok
        else:
            num_units = int(key["k"]) if key.get("k") is not None else None
            kind, settings = (ext or {}).get("name"), ext or {}
        return cls(key=dict(key), kind=kind, settings=dict(settings), num_units=num_units,
                   codebook_sha256=key.get("sha256") or (tok or {}).get("kmeans_sha256"),
                   weights_sha256=(tok or {}).get("weights_sha256"), deduplicated=key.get("deduplicated"),
                   compat=conventions.recorded(key))

    def compared(self, compare_compat: bool = True) -> dict[str, Any]:
        """The fields that must agree, flattened ("extractor.layer", "k", ...)."""
        out = {k: v for k, v in _flatten({**self.key, "compat": self.compat}).items() if k not in INFORMATIONAL}
        if not compare_compat:
            out.pop("compat")
        return out

    def differences(self, other: "UnitIdentity", compare_compat: bool = True) -> list[tuple[str, Any, Any]]:
        """(field, mine, theirs) that disagree: the kind and K always, then every field both records
        declare (a record written before a field existed is not refused for lacking it)."""
        diff = [(name, a, b) for name, a, b in (("kind", self.kind, other.kind), ("units", self.num_units, other.num_units))
                if a is not None and b is not None and a != b]
        mine, theirs = self.compared(compare_compat), other.compared(compare_compat)
        return diff + [(k, mine[k], theirs[k]) for k in mine if k in theirs and mine[k] != theirs[k]]


def as_identity(units: "UnitIdentity | Mapping | None") -> Optional[UnitIdentity]:
    if units is None or isinstance(units, UnitIdentity):
        return units
    return UnitIdentity.from_key(units)


def _detail(diff: list[tuple[str, Any, Any]], a: str, b: str) -> str:
    return "; ".join(f"{name} {x!r} in {a} vs {y!r} in {b}" for name, x, y in diff[:4])


def check_units(found: "UnitIdentity | Mapping | None", expected: "UnitIdentity | Mapping | None", found_in: str,
                expected_by: str, compare_compat: bool = True, error: type[Exception] = IdentityError) -> None:
    """Refuse when the units of `found_in` are not those of `expected_by` (nothing to compare when
    either side records none)."""
    a, b = as_identity(found), as_identity(expected)
    if a is None or b is None:
        return
    diff = a.differences(b, compare_compat)
    if diff:
        raise error(f"{found_in} and {expected_by} hold units from a different extractor/k-means "
                    f"({_detail(diff, found_in, expected_by)})")


def check_unit_count(found: "UnitIdentity | Mapping | None", num_units: Optional[int], found_in: str,
                     expected_by: str, error: type[Exception] = IdentityError) -> None:
    """Refuse units of a tokenizer with another K than the vocabulary's (checked even when the
    model records no units of its own)."""
    a = as_identity(found)
    if a is None or a.num_units is None or num_units is None or a.num_units == int(num_units):
        return
    what = f"k={a.num_units}" if a.key.get("k") is not None else f"{a.num_units}-unit"
    raise error(f"{found_in}: units come from a {what} extractor but {expected_by} has {num_units} units")


def check_ids(found: Mapping, expected: Mapping, found_in: str, expected_by: str, compare_units: bool = True,
              error: type[Exception] = IdentityError) -> None:
    """Refuse when `found` ({"vocab": ..., "units": ...}, e.g. a dataset sidecar's identity) was made
    with another vocabulary or other speech units than `expected`. K and the units only matter when
    both sides hold speech (`compare_units`): a text dataset fits any K of the same base tokenizer."""
    a, b = found.get("vocab") or {}, expected.get("vocab") or {}
    keys = list(VOCAB_KEYS) + (["num_units"] if compare_units else [])
    diff = [(k, a.get(k), b.get(k)) for k in keys if a.get(k) != b.get(k)]
    if diff:
        raise error(f"{found_in} and {expected_by} were made with a different vocabulary "
                    f"({_detail(diff, found_in, expected_by)})")
    if compare_units:
        check_units(found.get("units") or None, expected.get("units") or None, found_in, expected_by, error=error)


def of_units_meta(meta: Mapping) -> UnitIdentity:
    """The identity of a units sidecar's contents."""
    from megatron_slm.units.records import compatibility_key

    return UnitIdentity.from_key(compatibility_key(dict(meta)))


def read_units_sidecar(meta_file: str, error: type[Exception] = IdentityError) -> dict:
    """The units key of a sidecar file (`<units>.jsonl.meta.json`, or a model's `units.meta.json`),
    as it is stored in item headers, dataset sidecars and slm_model.json."""
    import json

    try:
        with open(meta_file, encoding="utf-8") as f:
            return dict(of_units_meta(json.load(f)).key)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise error(f"{meta_file}: not a readable units sidecar ({e})") from None
