"""Preprocessing: units (+ alignments) or text -> Megatron indexed datasets (.bin/.idx) + sidecar.

    job = PreprocessJob(kind="interleaved", tokenizer=..., inputs=["units.jsonl"], alignments="align.jsonl",
                        out_prefix="data/ls_inter", workers=4)
    summary = run(job)

Inputs are cut into fixed shards of lines (independent of the worker count); each worker turns a
shard into a small indexed dataset under `<prefix>.tmp/` plus a stats file written last, so a
killed run resumes from the finished shards. The merge writes `.bin`, the sidecar
`<prefix>.meta.json`, and the `.idx` last, each through a temporary name: an `.idx` on disk
always belongs to a complete dataset.

Document layouts (one document = one sequence):
  text          [BOS] text ids [EOD]
  speech        [BOS] unit ids [EOD]
  interleaved   static:  [BOS] <text> .. <speech> .. [EOD] drawn with (seed, epoch 0, utterance key)
                dynamic: text ids of all words ++ unit ids of the aligned range; the per-word
                layout goes to `<prefix>_words` (int32: key, n, n token counts, n lo, n hi)

Interleaved data follows `interleave.compat` (megatron_slm/conventions.py): with slamkit, a document is
the ids SlamKit's tokenizer call gives for its interleaved string -- BOS only where the tokenizer
adds one -- followed by EOD (the packing separator; already there when the tokenizer adds EOS).
The sidecar records the convention; units made under the other one are refused unless
`interleave.allow_mixed_compat`.
"""
from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import re
import shutil
import sys
import time
from typing import Optional

import numpy as np

from megatron_slm import conventions, document
from megatron_slm.config import InterleaveConfig
from megatron_slm.data import interleave, spans
from megatron_slm.corpus.alignments import AlignmentIndex
from megatron_slm.corpus.words import AlignmentError
from megatron_slm.data.indexed import IndexedWriter
from megatron_slm.data.prepare import prepare_batch, units_record
from megatron_slm.data.records import (RecordError, SkipLog, count_lines, decode_json_line, file_fingerprint,
                                       iter_line_shards)
from megatron_slm.jsonio import loads
from megatron_slm.data.storage import (SIDECAR_FORMAT, TEXT_KINDS, WORDS_SUFFIX, dataset_identity, dynamic_records,
                                       read_sidecar, sidecar_path, token_dtype, write_json_atomic)
from megatron_slm.unit_identity import IdentityError, check_ids
from megatron_slm.vocab import SpeechVocab, VocabError, tokenizer_unit_count


class PreprocessError(ValueError):
    """A user error that stops preprocessing (bad arguments, identity mismatch, --strict)."""


@dataclasses.dataclass
class PreprocessJob:
    kind: str                                   # interleaved | speech | text
    tokenizer: str
    out_prefix: str
    inputs: list[str]                           # units JSONL (interleaved/speech) or text JSONL files
    alignments: Optional[str] = None
    alignment_format: str = "auto"
    num_units: Optional[int] = None             # default: units sidecar k, else the tokenizer's, else DEFAULT_NUM_UNITS
    mode: str = "static"                        # interleaved: static | dynamic
    interleave: InterleaveConfig = dataclasses.field(default_factory=InterleaveConfig)
    seed: int = 1234
    text_key: str = "text"
    workers: int = 1
    strict: bool = False
    shard_lines: int = 1000
    add_bos: bool = True
    match: list[str] = dataclasses.field(default_factory=list)
    progress: bool = True


# ----------------------------------------------------------------------------- worker side

@dataclasses.dataclass
class WorkerState:
    """What a preprocessing worker holds. Workers are forked: the driver's vocabulary and
    alignment index are inherited, not re-read."""
    job: PreprocessJob
    align: Optional[AlignmentIndex]
    vocab: SpeechVocab
    tmpdir: str


_WORKER: Optional[WorkerState] = None  # this process's state (set by _init_worker)


def _init_worker(job: PreprocessJob, align: Optional[AlignmentIndex], vocab: SpeechVocab, tmpdir: str) -> None:
    global _WORKER
    _WORKER = WorkerState(job, align, vocab, tmpdir)


def _document(obj: dict, where: str) -> tuple[np.ndarray, float]:
    """One text or speech record -> (document ids, audio seconds)."""
    job: PreprocessJob = _WORKER.job
    vocab: SpeechVocab = _WORKER.vocab
    markers = document.Markers.of(vocab, bos=job.add_bos)
    if job.kind == "text":
        text = obj.get(job.text_key)
        if not isinstance(text, str):
            raise RecordError(f"{where}: field {job.text_key!r} missing or not a string", "missing_text_key")
        if not text.strip():
            raise RecordError(f"{where}: field {job.text_key!r} is empty", "empty_transcript")
        return document.training_document([document.text(vocab, text)], markers, interleaved=False), 0.0
    rec, units = units_record(obj, where, vocab.num_units)
    return (document.training_document([document.speech(vocab, units)], markers, interleaved=False),
            float(rec.audio_seconds))


def _interleave_shard(records: list[tuple[str, dict, bytes]]) -> tuple[list[int], list[np.ndarray], list, list[np.ndarray], dict, list]:
    """(positions kept, stored documents, dynamic words records or Nones, epoch-0 draws, stats,
    [(position, RecordError)]) of a shard's interleaved records, prepared, drawn and assembled
    in one batch. Static storage is the epoch-0 draw; dynamic storage keeps the layout once (the
    statistics still describe the epoch-0 draw)."""
    job: PreprocessJob = _WORKER.job
    kept, batch, audio, errors = prepare_batch([(w, o) for w, o, _ in records], _WORKER.vocab, _WORKER.align,
                                               job.interleave.compat, lines=[r for _, _, r in records])
    ids, offsets = interleave.assemble_batch(batch, interleave.draw_batch(batch, job.interleave, job.seed, 0),
                                     document.Markers.of(_WORKER.vocab, bos=job.add_bos))
    draws = np.split(ids, offsets[1:-1]) if kept else []
    stats = {"words": int(batch.word_starts[-1]), "audio_seconds": float(audio.sum())}
    if job.mode != "dynamic":
        return kept, draws, [None] * len(kept), draws, stats, errors
    layouts, words = dynamic_records(batch)
    return kept, layouts, words, draws, stats, errors


def process_shard(args: tuple[int, list[tuple[str, bytes, bool]]]) -> dict:
    """Write one shard's documents to `<tmp>/shard_<i>` and return its stats (also saved as JSON)."""
    index, lines = args
    job: PreprocessJob = _WORKER.job
    vocab: SpeechVocab = _WORKER.vocab
    skips = SkipLog()
    stats = {"documents": 0, "words": 0, "audio_seconds": 0.0, "tokens": [0, 0, 0], "stored_tokens": 0}
    errors: list[tuple[int, RecordError]] = []
    records, docs, secs = [], [], []
    for i, (where, raw, duplicate) in enumerate(lines):
        try:
            if duplicate:
                raise RecordError(f"{where}: utterance id seen before in this input (first kept)", "duplicate_id")
            obj = decode_json_line(raw, where)
            if job.kind == "interleaved":
                records.append((i, where, obj, raw))
            else:
                doc, s = _document(obj, where)
                docs.append(doc)
                secs.append(s)
        except RecordError as e:
            errors.append((i, e))
    if job.kind == "interleaved":
        kept, docs, words, draws, extra, more = _interleave_shard([(w, o, r) for _, w, o, r in records])
        errors += [(records[j][0], e) for j, e in more]
        stats.update(extra, documents=len(kept))
    else:
        words, draws = [None] * len(docs), docs
        stats.update(documents=len(docs), audio_seconds=float(sum(secs)))
    for _, e in sorted(errors, key=lambda x: x[0]):  # in input order: the first examples shown are the first lines
        if job.strict:
            raise PreprocessError(f"{e} [--strict]") from None
        skips.add(e.reason, str(e))
    prefix = os.path.join(_WORKER.tmpdir, f"shard_{index:06d}")
    builder = IndexedWriter(prefix + ".bin", token_dtype(vocab.vocab_size))
    words_builder = (IndexedWriter(prefix + WORDS_SUFFIX + ".bin", np.int32)
                     if job.mode == "dynamic" and job.kind == "interleaved" else None)
    for doc, w in zip(docs, words):
        builder.add_document(doc)
        if words_builder is not None:
            words_builder.add_document(w)
    builder.finalize(prefix + ".idx")
    if words_builder is not None:
        words_builder.finalize(prefix + WORDS_SUFFIX + ".idx")
    stats["stored_tokens"] = int(sum(map(len, docs)))
    if draws:
        stats["tokens"] = np.bincount(vocab.modality_of(np.concatenate(draws)), minlength=3).tolist()
    stats["skipped"] = skips.to_dict()
    write_json_atomic(prefix + ".json", stats)  # the shard's completion marker
    return stats


# ----------------------------------------------------------------------------- driver side


_FIRST_ID = re.compile(rb'\s*\{\s*"id"\s*:\s*"((?:[^"\\]|\\.)*)"')


def line_id(raw: bytes) -> Optional[str]:
    """The utterance id of a units line, as JSON decoding gives it (None: no string id).

    Cheap for the usual line: `{"id": "...", ...}` with no other `"id"` and no `\\u` escape has
    the id as the first key of the top-level object and no second key spelled "id" (escaped or
    not), so the id is that first string, decoded on its own when it holds an escape. Any other
    line is decoded whole: an id written "s01_\\u0030\\u0033" is the same id as "s01_03"."""
    m = _FIRST_ID.match(raw) if b"\\u" not in raw and raw.count(b'"id"') == 1 else None
    try:
        if m:
            uid = m.group(1)
            return uid.decode("utf-8") if b"\\" not in uid else loads(b'"' + uid + b'"')
        obj = loads(raw)
    except ValueError:  # not UTF-8 / not JSON: the worker names the problem
        return None
    uid = obj.get("id") if isinstance(obj, dict) else None
    return uid if type(uid) is str else None


def _flag_duplicates(shards, seen: set):
    """Mark lines whose utterance id was already seen (ids read by `line_id`)."""
    for index, lines in shards:
        flagged = []
        for where, raw in lines:
            uid = line_id(raw)
            dup = uid is not None and uid in seen
            if uid is not None:
                seen.add(uid)
            flagged.append((where, raw, dup))
        yield index, flagged


def identity_of_units(paths: list[str]) -> dict:
    from megatron_slm.units.records import check_compatible, compatibility_key

    try:
        meta = check_compatible(paths)
    except (FileNotFoundError, ValueError) as e:
        raise PreprocessError(str(e)) from None
    return {**compatibility_key(meta), "sidecar": os.path.abspath(paths[0]) + ".meta.json"}


def identities_to_match(match: list[str], out_prefix: str) -> list[tuple[dict, str, str]]:
    """(identity, where, kind) of every --match, and of the dataset at `out_prefix` when there is
    one: a replacement must stay compatible with what was made from the old one."""
    matches = [_load_match(m) for m in match]
    if os.path.isfile(sidecar_path(out_prefix)):
        old = read_sidecar(out_prefix)
        matches.append((old["identity"], sidecar_path(out_prefix), old["kind"]))
    return matches


def _load_match(path: str) -> tuple[dict, str, str]:
    """(identity, where, kind) of a dataset prefix / sidecar, or of a tokenizer dir (e.g.
    <checkpoint>/tokenizer: kind "model", a vocabulary that holds speech)."""
    prefix = path[:-len(".meta.json")] if path.endswith(".meta.json") else path
    if os.path.isfile(sidecar_path(prefix)):
        meta = read_sidecar(prefix)
        return meta["identity"], sidecar_path(prefix), meta["kind"]
    tok_dir = os.path.join(path, "tokenizer") if os.path.isdir(os.path.join(path, "tokenizer")) else path
    if os.path.isdir(tok_dir):
        try:
            K = tokenizer_unit_count(tok_dir)
        except VocabError as e:
            raise PreprocessError(f"--match {path}: {e}") from None
        return dataset_identity(SpeechVocab.from_pretrained(tok_dir, num_units=K), None), tok_dir, "model"
    raise PreprocessError(f"--match {path}: not a dataset prefix, sidecar, checkpoint or tokenizer dir")


def run(job: PreprocessJob) -> dict:
    """Run (or resume) a preprocessing job; returns the sidecar dict. Raises PreprocessError."""
    t0 = time.time()
    if job.kind not in ("interleaved", "speech", "text"):
        raise PreprocessError(f"unknown dataset kind {job.kind!r}")
    try:
        spans.check_config(job.interleave, prefix="--interleave")
    except ValueError as e:
        raise PreprocessError(str(e).replace("--interleave.", "--").replace("_", "-")) from None
    if job.workers < 1 or job.shard_lines < 1:
        raise PreprocessError(f"--workers ({job.workers}) and --shard-lines ({job.shard_lines}) must be >= 1")
    for p in job.inputs:
        if not os.path.isfile(p):
            raise PreprocessError(f"input {p}: no such file")
    units_identity = identity_of_units(job.inputs) if job.kind != "text" else None
    # speech data follows its units' convention; interleaved data its own, which must be theirs
    convention = conventions.recorded(units_identity) if units_identity is not None else None
    if job.kind == "interleaved":
        convention = job.interleave.compat
        try:
            conventions.check_same([(f"the interleaving (--compat {convention})", convention),
                               (f"the units ({units_identity['sidecar']})", conventions.recorded(units_identity))],
                              job.interleave.allow_mixed_compat, "--allow-mixed-compat")
        except conventions.CompatError as e:
            raise PreprocessError(str(e)) from None
    K = job.num_units
    if units_identity is not None:
        from megatron_slm.units.records import key_num_units

        k = key_num_units(units_identity)  # a codec's K x n_q
        if K is not None and K != k:
            raise PreprocessError(f"--num-units {K} but {units_identity['sidecar']} says the units have k={k}")
        K = k
    try:
        vocab = SpeechVocab.from_pretrained(job.tokenizer, num_units=K)
    except VocabError as e:
        raise PreprocessError(str(e)) from None
    if job.kind == "interleaved":  # what documents start with: recorded in the sidecar, used by the reader
        try:
            job = dataclasses.replace(job, add_bos=document.document_bos(vocab, job.add_bos, job.interleave.compat))
        except document.LayoutError as e:
            raise PreprocessError(str(e)) from None
    identity = dataset_identity(vocab, units_identity)
    separable = vocab.words_are_separable() if job.kind == "interleaved" else None
    if separable is False:
        print(f"warning: tokenizer {job.tokenizer}: words tokenised one by one differ from the tokenised text "
              f"(its pre-tokenizer merges across spaces); text spans are cut at word boundaries", file=sys.stderr)
    for other, where, kind in identities_to_match(job.match, job.out_prefix):
        try:
            check_ids(other, identity, where, f"{job.out_prefix} (being made)",
                      compare_units=TEXT_KINDS[0] not in (job.kind, kind))
        except IdentityError as e:
            raise PreprocessError(str(e)) from None

    align = None
    if job.kind == "interleaved":
        if not job.alignments:
            raise PreprocessError("interleaved datasets need --alignments")
        try:
            align = AlignmentIndex(job.alignments, job.alignment_format)
        except AlignmentError as e:
            raise PreprocessError(str(e)) from None
        if job.strict and align.problems:
            raise PreprocessError(f"{align.problems[0][1]} [--strict]")

    # ---- resume or restart the shard directory
    tmpdir = job.out_prefix + ".tmp"
    fingerprint = {"job": {k: v for k, v in dataclasses.asdict(job).items() if k not in ("workers", "progress", "match")},
                   "inputs": file_fingerprint(job.inputs), "identity": identity,
                   "alignments": file_fingerprint([job.alignments]) if job.alignments and os.path.isfile(job.alignments) else None}
    run_json = os.path.join(tmpdir, "run.json")
    if os.path.isdir(tmpdir):
        try:
            with open(run_json, encoding="utf-8") as f:
                same = json.load(f) == json.loads(json.dumps(fingerprint))
        except (OSError, ValueError):
            same = False
        if not same:
            shutil.rmtree(tmpdir)
    os.makedirs(tmpdir, exist_ok=True)
    write_json_atomic(run_json, fingerprint)
    done = {int(n[6:12]) for n in os.listdir(tmpdir) if re.fullmatch(r"shard_\d{6}\.json", n)}

    total_lines = count_lines(job.inputs)
    n_shards = max(1, -(-total_lines // job.shard_lines))
    seen_ids: set = set()
    shards = _flag_duplicates(iter_line_shards(job.inputs, job.shard_lines), seen_ids) if job.kind != "text" \
        else ((i, [(w, r, False) for w, r in lines]) for i, lines in iter_line_shards(job.inputs, job.shard_lines))
    pending = ((i, lines) for i, lines in shards if i not in done)

    from tqdm import tqdm

    bar = tqdm(total=n_shards, initial=len(done), unit="shard", desc=f"{job.kind} {os.path.basename(job.out_prefix)}",
               disable=not job.progress)
    initargs = (job, align, vocab, tmpdir)
    try:
        if job.workers <= 1:
            _init_worker(*initargs)
            for item in pending:
                process_shard(item)
                bar.update()
        else:
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            ctx = multiprocessing.get_context("fork")
            with ctx.Pool(job.workers, initializer=_init_worker, initargs=initargs) as pool:
                for _ in pool.imap_unordered(process_shard, pending, chunksize=1):
                    bar.update()
    finally:
        bar.close()

    # ---- totals first: a run that kept nothing must not replace a dataset
    shard_ids = sorted(int(n[6:12]) for n in os.listdir(tmpdir) if re.fullmatch(r"shard_\d{6}\.json", n))
    totals = {"documents": 0, "words": 0, "audio_seconds": 0.0, "tokens": [0, 0, 0], "stored_tokens": 0}
    skips = SkipLog()
    for i in shard_ids:
        with open(os.path.join(tmpdir, f"shard_{i:06d}.json"), encoding="utf-8") as f:
            st = json.load(f)
        for k in ("documents", "words", "audio_seconds", "stored_tokens"):
            totals[k] += st[k]
        totals["tokens"] = [a + b for a, b in zip(totals["tokens"], st["tokens"])]
        skips.merge(st["skipped"])
    if align is not None:
        for reason, msg in align.problems:
            skips.add(reason, msg)
        unmatched = [uid for uid in align.ids() if uid not in seen_ids]
        for uid in unmatched:  # a cut without word alignments counts for that reason, not as no_units
            skips.add(*(align.unusable(uid) or ("no_units", f"{job.alignments}: utterance {uid!r} has an alignment "
                                                             "but no units")))
    if totals["documents"] == 0:
        counts = ", ".join(f"{n} {r}" for r, n in sorted(skips.counts.items())) or "the inputs hold no records"
        first = f"; first: {skips.examples[0]}" if skips.examples else ""
        kept = (f"; the existing dataset {job.out_prefix} is left as it was"
                if os.path.exists(sidecar_path(job.out_prefix)) else "")
        raise PreprocessError(f"no usable records ({counts}){first}{kept}")

    # ---- merge in shard order; .idx last
    out = job.out_prefix
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    prefixes = [out] + ([out + WORDS_SUFFIX] if job.kind == "interleaved" and job.mode == "dynamic" else [])
    for p in prefixes:  # an old .idx must never sit next to a new .bin
        for suffix in (".idx", ".bin"):
            if os.path.exists(p + suffix):
                os.remove(p + suffix)
    if os.path.exists(sidecar_path(out)):
        os.remove(sidecar_path(out))
    for sfx in ([""] + ([WORDS_SUFFIX] if len(prefixes) == 2 else [])):
        builder = IndexedWriter(out + sfx + ".bin.tmp", np.int32 if sfx else token_dtype(vocab.vocab_size))
        for i in shard_ids:
            builder.add_index(os.path.join(tmpdir, f"shard_{i:06d}{sfx}"))
        builder.finalize(out + sfx + ".idx.tmp")
    text, speech, other = totals["tokens"]
    sidecar = {
        "format": SIDECAR_FORMAT,
        "kind": job.kind,
        "mode": job.mode if job.kind == "interleaved" else None,
        "seed": job.seed if job.kind == "interleaved" else None,
        "interleave": dataclasses.asdict(job.interleave) if job.kind == "interleaved" else None,
        "compat": convention,
        "add_bos": job.add_bos,
        "words_separable": separable,
        "dtype": np.dtype(token_dtype(vocab.vocab_size)).name,
        "identity": identity,
        "tokenizer": os.path.abspath(job.tokenizer),
        "inputs": [os.path.abspath(p) for p in job.inputs],
        "alignments": os.path.abspath(job.alignments) if job.alignments else None,
        "documents": totals["documents"],
        "words": totals["words"],
        "stored_tokens": totals["stored_tokens"],
        "tokens": {"text": text, "speech": speech, "other": other, "total": text + speech + other,
                   "note": "of the stored documents; dynamic mode: of the epoch-0 draw"},
        "audio_hours": totals["audio_seconds"] / 3600.0,
        "skipped": skips.to_dict(),
        "elapsed_s": round(time.time() - t0, 3),
    }
    for sfx in [""] + ([WORDS_SUFFIX] if len(prefixes) == 2 else []):
        os.replace(out + sfx + ".bin.tmp", out + sfx + ".bin")
    write_json_atomic(sidecar_path(out), sidecar)
    if len(prefixes) == 2:
        os.replace(out + WORDS_SUFFIX + ".idx.tmp", out + WORDS_SUFFIX + ".idx")
    os.replace(out + ".idx.tmp", out + ".idx")  # the dataset exists from here on
    shutil.rmtree(tmpdir)
    return sidecar
