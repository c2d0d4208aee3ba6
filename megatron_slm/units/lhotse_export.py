"""Units written back to a Lhotse manifest: each cut gets the custom field `speech_units`
({units, durations, unit_seconds, num_frames}), and the units' identity sidecar goes beside it."""
from __future__ import annotations

import os

from megatron_slm.corpus import lhotse_manifests
from megatron_slm.units.records import iter_records, read_meta, write_meta

UNITS_FIELD = "speech_units"  # the custom field that carries units written back to cuts


def _units_value(rec) -> dict:
    return {"units": list(rec.units), "durations": list(rec.durations), "unit_seconds": rec.unit_seconds,
            "num_frames": rec.num_frames}


def write_units(manifest: str, units_path: str, out: str) -> dict:
    """Attach the units of `units_path` (by utterance id) to the manifest's cuts and write them: a
    CutSet `out` (`.jsonl.gz`) for a CutSet or supervisions manifest; for a Shar directory, Shar
    field shards `out/speech_units.NNNNNN.jsonl.gz` that go next to its other shards. The units'
    identity sidecar is copied to `<out>.meta.json` (Shar: `<out>.speech_units.meta.json`, beside
    the directory: lhotse takes every file in a Shar directory for a field). Returns {"cuts", "with_units"}."""
    lhotse_manifests.lhotse()  # before reading the units: without lhotse nothing can be written
    units = {r.id: r for r in iter_records(units_path)}
    counts = lhotse_manifests.write_field(manifest, UNITS_FIELD,
                                          lambda uid: _units_value(units[uid]) if uid in units else None, out)
    shar = lhotse_manifests.detect(manifest) == "shar"
    write_meta(os.path.normpath(out) + f".{UNITS_FIELD}" if shar else out, read_meta(units_path))
    return {"cuts": counts["cuts"], "with_units": counts["with_field"]}
