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

`max_auto_bleu` is SlamKit's repetition filter (its DPO data config: repetition_filter, auto_bleu_n
2, max_auto_bleu 0.3): a preference record is kept iff the Auto-BLEU (eval/generative.py) of its
`prompt_text + " " + chosen_text` (else of its prompt's and chosen's text segments) is below the
maximum. Dropped records are skipped as `repetitive`; a record without text as `no_text`; inputs
in which no record has text are refused.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from megatron_slm import conventions
from megatron_slm.data.preprocess import PreprocessError, identities_to_match, identity_of_units
from megatron_slm.data.records import SkipLog
from megatron_slm.data.storage import (SIDECAR_FORMAT, dataset_identity, sidecar_path, token_dtype,
                                       write_json_atomic)
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
    max_auto_bleu: Optional[float] = None  # SlamKit's repetition filter: keep iff auto-BLEU < this (preference only)
    auto_bleu_n: int = 2
    word_tokenizer: str = "auto"  # auto | nltk | regex (eval/generative.py word_tokenizer)


def _units_source(job: PairJob) -> Optional[str]:
    """The units file whose `.meta.json` identifies the records' units, or None when there is none."""
    if job.units_meta:
        return job.units_meta
    own = [p for p in job.inputs if os.path.isfile(p + ".meta.json")]
    return own[0] if own else None


def _scan(job: PairJob):
    """(where, parts, text) of every usable line (text: what the repetition filter measures, None
    without the filter); bad lines go to the skip log (or raise with --strict)."""
    skips = SkipLog()
    parsed = []
    for path in job.inputs:
        try:
            for where, obj in iter_jsonl(path, error=records.PairRecordError):
                try:
                    parts = records.parse_record(obj, job.kind, where)
                    text = records.repetition_text(obj, parts, where) if job.max_auto_bleu is not None else None
                    parsed.append((where, parts, text))
                except records.PairRecordError as e:
                    if job.strict:
                        raise PreprocessError(f"{e} [--strict]") from None
                    skips.add(e.reason, str(e))
        except records.PairRecordError as e:  # a line that is not JSON / UTF-8: iter_jsonl stops there
            raise PreprocessError(str(e)) from None
    return parsed, skips


def _tokenizer(job: PairJob):
    """(name, tokenize) of the filter's word tokenizer (eval/generative.py; SlamKit's is NLTK's)."""
    from megatron_slm.eval.generative import word_tokenizer
    from megatron_slm.generate.sampling import GenerationError

    try:
        return word_tokenizer(job.word_tokenizer)
    except GenerationError as e:
        raise PreprocessError(f"--word-tokenizer: {e}") from None


def _repetition_filter(job: PairJob, parsed: list, skips: SkipLog) -> tuple[list, dict]:
    """SlamKit's filter: keep a record iff auto_bleu(text, n) < max_auto_bleu. Records without text
    are skipped (no_text; --strict stops there); if none has text the inputs are refused. Dropping a
    repetitive record is the filter's purpose, never an error, --strict or not."""
    from megatron_slm.eval.generative import auto_bleu

    if parsed and all(text is None for _, _, text in parsed):
        raise PreprocessError(f"--max-auto-bleu measures text, and none of the {len(parsed)} records has any: no "
                              f"prompt_text/chosen_text fields (SlamKit's transcripts; tools/make_preference_data.py "
                              f"writes them) and no text segment in prompt or chosen")
    tok_name, tokenize = _tokenizer(job)
    kept, scores = [], []
    for where, parts, text in parsed:
        if text is None:
            message = f"{where}: --max-auto-bleu: the record has no text to measure"
            if job.strict:
                raise PreprocessError(f"{message} [--strict]")
            skips.add("no_text", message)
            continue
        score = auto_bleu(text, job.auto_bleu_n, tokenize)
        scores.append(score)
        if score < job.max_auto_bleu:
            kept.append((where, parts, text))
        else:
            skips.add("repetitive", f"{where}: auto-BLEU {score:.3f} >= --max-auto-bleu {job.max_auto_bleu:g}")
    info = {"max_auto_bleu": job.max_auto_bleu, "auto_bleu_n": job.auto_bleu_n, "word_tokenizer": tok_name,
            "measured": len(scores), "dropped": sum(1 for s in scores if s >= job.max_auto_bleu),
            "mean_auto_bleu": round(float(np.mean(scores)), 6) if scores else None}
    return kept, info


def run(job: PairJob) -> dict:
    """Write the dataset; returns its sidecar. Raises PreprocessError (one line, names file/line/field)."""
    t0 = time.time()
    if job.kind not in records.PARTS:
        raise PreprocessError(f"unknown post-training kind {job.kind!r} (preference or sft)")
    max_prompt = job.max_prompt_length if job.max_prompt_length is not None else job.max_length // 2
    if not 1 <= max_prompt < job.max_length:
        raise PreprocessError(f"--max-prompt-length {max_prompt} must be >= 1 and below --max-length {job.max_length}")
    if job.max_auto_bleu is not None:
        if job.kind != records.PREFERENCE:
            raise PreprocessError("--max-auto-bleu filters preference records (SlamKit's DPO data), not sft")
        if not job.auto_bleu_n >= 1:
            raise PreprocessError(f"--auto-bleu-n must be >= 1 (got {job.auto_bleu_n})")
        _tokenizer(job)  # a missing nltk stops here, before any reading
    for p in job.inputs:
        if not os.path.isfile(p):
            raise PreprocessError(f"input {p}: no such file")
    parsed, skips = _scan(job)
    repetition = None
    if job.max_auto_bleu is not None:
        parsed, repetition = _repetition_filter(job, parsed, skips)
    speech = any(records.has_units(parts) for _, parts, _ in parsed)
    source = _units_source(job)
    units_identity = None
    if speech:
        if source is None:
            raise PreprocessError(f"{job.inputs[0]}: records hold units but no units identity was given: put the "
                                  f"units sidecar beside the input as {job.inputs[0]}.meta.json or pass --units-meta "
                                  f"<the units JSONL the records' units came from>")
        units_identity = identity_of_units([source])
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
    for other, where, _kind in identities_to_match(job.match, job.out_prefix):
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
    for where, parts, _ in tqdm(parsed, desc=f"{job.kind} {os.path.basename(out)}", unit="record",
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
        "repetition_filter": repetition,
        "elapsed_s": round(time.time() - t0, 3),
    }
    write_json_atomic(sidecar_path(out), sidecar)
    writer.finalize()  # the .idx files last: the dataset exists from here on
    return sidecar
