"""`tools/preprocess_data.py preference|sft`: post-training records -> a stored pair dataset.

    job = PairJob(kind="preference", tokenizer=..., inputs=["pref.jsonl"], out_prefix="data/pref")
    sidecar = run(job)

Records are parsed (posttrain/records.py), laid out (BOS + prompt; each completion + EOS),
truncated TRL-style to `max_length` and written with their per-token roles. Skipped records
(malformed, empty completion, chosen == rejected, ...) and truncated ones are counted in the
summary and the sidecar; --strict stops at the first bad one. Records holding units need the
identity of those units: the input's own `<input>.meta.json` (a units sidecar, as
tools/extract_units.py and tools/make_preference_data.py write) or `--units-meta <units.jsonl>`;
units from another k-means than --match's are refused.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from megatron_slm import conventions
from megatron_slm.data.preprocess import PreprocessError, _load_match, _units_identity
from megatron_slm.data.records import SkipLog
from megatron_slm.data.storage import (SIDECAR_FORMAT, DatasetError, dataset_identity, read_sidecar, sidecar_path,
                                       token_dtype, write_json_atomic)
from megatron_slm.jsonio import iter_jsonl
from megatron_slm.posttrain import records
from megatron_slm.posttrain.storage import ROLES_SUFFIX, PairWriter
from megatron_slm.unit_identity import IdentityError, check_ids
from megatron_slm.vocab import SpeechVocab, VocabError


@dataclass
class PairJob:
    kind: str  # "preference" | "sft"
    tokenizer: str
    inputs: list[str]
    out_prefix: str
    max_length: int = 2048
    max_prompt_length: Optional[int] = None  # default: max_length // 2
    units_meta: Optional[str] = None  # a units JSONL whose sidecar gives the records' units identity
    num_units: Optional[int] = None
    match: list[str] = field(default_factory=list)
    strict: bool = False
    progress: bool = True


def _units_source(job: PairJob) -> Optional[str]:
    """The units file whose `.meta.json` identifies the records' units, or None when there is none."""
    if job.units_meta:
        return job.units_meta
    own = [p for p in job.inputs if os.path.isfile(p + ".meta.json")]
    return own[0] if own else None


def _scan(job: PairJob):
    """(where, parts) of every usable line; bad lines go to the skip log (or raise with --strict)."""
    skips = SkipLog()
    parsed = []
    for path in job.inputs:
        try:
            for where, obj in iter_jsonl(path, error=records.PairRecordError):
                try:
                    parsed.append((where, records.parse_record(obj, job.kind, where)))
                except records.PairRecordError as e:
                    if job.strict:
                        raise PreprocessError(f"{e} [--strict]") from None
                    skips.add(e.reason, str(e))
        except records.PairRecordError as e:  # a line that is not JSON / UTF-8: iter_jsonl stops there
            raise PreprocessError(str(e)) from None
    return parsed, skips


def run(job: PairJob) -> dict:
    """Write the dataset; returns its sidecar. Raises PreprocessError (one line, names file/line/field)."""
    t0 = time.time()
    if job.kind not in records.PARTS:
        raise PreprocessError(f"unknown post-training kind {job.kind!r} (preference or sft)")
    max_prompt = job.max_prompt_length if job.max_prompt_length is not None else job.max_length // 2
    if not 1 <= max_prompt < job.max_length:
        raise PreprocessError(f"--max-prompt-length {max_prompt} must be >= 1 and below --max-length {job.max_length}")
    for p in job.inputs:
        if not os.path.isfile(p):
            raise PreprocessError(f"input {p}: no such file")
    parsed, skips = _scan(job)
    speech = any(records.has_units(parts) for _, parts in parsed)
    source = _units_source(job)
    units_identity = None
    if speech:
        if source is None:
            raise PreprocessError(f"{job.inputs[0]}: records hold units but no units identity was given: put the "
                                  f"units sidecar beside the input as {job.inputs[0]}.meta.json or pass --units-meta "
                                  f"<the units JSONL the records' units came from>")
        units_identity = _units_identity([source])
    K = job.num_units
    if units_identity is not None:
        if K is not None and K != units_identity["k"]:
            raise PreprocessError(f"--num-units {K} but {units_identity['sidecar']} says the units have "
                                  f"k={units_identity['k']}")
        K = units_identity["k"]
    try:
        vocab = SpeechVocab.from_pretrained(job.tokenizer, num_units=K)
    except VocabError as e:
        raise PreprocessError(str(e)) from None
    identity = dataset_identity(vocab, units_identity)
    matches = [_load_match(m) for m in job.match]
    if os.path.isfile(sidecar_path(job.out_prefix)):  # replacing a dataset: it must stay compatible
        old = read_sidecar(job.out_prefix)
        matches.append((old["identity"], sidecar_path(job.out_prefix), old["kind"]))
    for other, where, _kind in matches:
        try:
            check_ids(other, identity, where, f"{job.out_prefix} (being made)", compare_units=speech)
        except IdentityError as e:
            raise PreprocessError(f"{e} (the records' units come from {units_identity['sidecar']})"
                                  if units_identity and "different extractor" in str(e) else str(e)) from None

    from tqdm import tqdm

    out = job.out_prefix
    for p in (out, out + ROLES_SUFFIX):  # an old .idx must never sit next to a new .bin
        for suffix in (".idx", ".bin"):
            if os.path.exists(p + suffix):
                os.remove(p + suffix)
    writer = PairWriter(out, vocab.vocab_size)
    n, truncated = 0, {"prompts": 0, "completions": 0, "pairs": 0}
    tokens = {"prompt": 0, "completions": 0}
    for where, parts in tqdm(parsed, desc=f"{job.kind} {os.path.basename(out)}", unit="record",
                             disable=not job.progress):
        try:
            pair = records.layout(parts, job.kind, vocab, where)
            pair, cut = records.truncate(pair, job.max_length, max_prompt, vocab.bos is not None, where)
        except records.PairRecordError as e:
            if job.strict:
                raise PreprocessError(f"{e} [--strict]") from None
            skips.add(e.reason, str(e))
            continue
        truncated["prompts"] += cut.prompt
        truncated["completions"] += cut.completions
        truncated["pairs"] += cut.prompt or cut.completions
        tokens["prompt"] += len(pair.prompt)
        tokens["completions"] += sum(len(c) for c in pair.completions)
        writer.add(pair.prompt, pair.completions)
        n += 1
    if n == 0:
        counts = ", ".join(f"{c} {r}" for r, c in sorted(skips.counts.items())) or "the inputs hold no records"
        first = f"; first: {skips.examples[0]}" if skips.examples else ""
        raise PreprocessError(f"no usable records ({counts}){first}")
    sidecar = {
        "format": SIDECAR_FORMAT,
        "kind": job.kind,
        "compat": conventions.recorded(units_identity) if units_identity else None,
        "dtype": np.dtype(token_dtype(vocab.vocab_size)).name,
        "identity": identity,
        "tokenizer": os.path.abspath(job.tokenizer),
        "inputs": [os.path.abspath(p) for p in job.inputs],
        "documents": n,
        "max_length": job.max_length,
        "max_prompt_length": max_prompt,
        "tokens": tokens,
        "truncated": truncated,
        "skipped": skips.to_dict(),
        "elapsed_s": round(time.time() - t0, 3),
    }
    write_json_atomic(sidecar_path(out), sidecar)
    writer.finalize()  # the .idx files last: the dataset exists from here on
    return sidecar
