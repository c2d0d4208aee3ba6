#!/usr/bin/env python
"""Benchmark: interleaved tokens produced per CPU-second, ours vs the naive (SlamKit-style) method.

  ours : per-word text ids from a cache of distinct words, unit ids by arithmetic (V + k), the
         draws and the assembly of all utterances vectorised in one batch; records read by orjson
  naive: the interleaved *string* with <Un..>/<speech>/<text> token strings, tokenised by the HF
         tokenizer (K=500 added tokens), as SlamKit builds its interleaved data (--compat slamkit,
         the default: SlamKit's own string, megatron_slm/testing/slamkit_reference.py; --compat
         none: the same method for this project's earlier layout)

Both run in this process over the same synthetic aligned corpus (K=500 units at 25 Hz,
LibriSpeech-like 20-50 words per utterance, words from a Zipfian lexicon of 20,000), with the
same span draws (made outside the naive method's timing, which flatters it) and the same
units-in-time-range selection, so only the way the ids are made differs; the outputs are checked
to be identical. Two measurements:
  A. a new interleaving of already-parsed utterances (what every epoch of dynamic mode costs)
  B. end to end from the JSONL lines (parse, validate, tokenise, interleave once: static mode)
and the full `tools/preprocess_data.py` path with 1 worker (incl. .bin/.idx writing and merge).

  python bench/preprocess.py --utterances 3000 [--compat slamkit|none]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings

import numpy as np

warnings.filterwarnings("ignore", message=".*Apex.*")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from megatron_slm.config import InterleaveConfig  # noqa: E402
from megatron_slm.data import interleave as il  # noqa: E402
from megatron_slm.data.spans import speech_masks  # noqa: E402
from megatron_slm.document import Markers, document_bos  # noqa: E402
from megatron_slm.data import preprocess as pp  # noqa: E402
from megatron_slm.corpus.alignments import AlignmentIndex  # noqa: E402
from megatron_slm.corpus.canonical import parse_canonical  # noqa: E402
from megatron_slm.corpus.words import validate  # noqa: E402
from megatron_slm.data.prepare import prepare_batch, prepare_interleaved  # noqa: E402
from megatron_slm.data.records import decode_json_line  # noqa: E402
from megatron_slm.testing import slamkit_reference  # noqa: E402
from megatron_slm.units.records import make_meta  # noqa: E402
from megatron_slm.testing.synthetic_units import write_synthetic_corpus  # noqa: E402
from megatron_slm.jsonio import loads  # noqa: E402
from megatron_slm.vocab import SpeechVocab  # noqa: E402

TOKENIZER = os.path.join(os.path.dirname(__file__), "..", "examples", "tokenizer", "tiny-bpe")


def parse(lines, vocab, align, compat):
    """What both methods keep per utterance after the first pass."""
    out = []
    for i, line in enumerate(lines):
        u, rec = prepare_interleaved(json.loads(line), f"units:{i + 1}", vocab, align, compat)
        al = align.get(rec.id)
        out.append((u, al, rec))
    return out


def markers(vocab, compat):
    return Markers.of(vocab, bos=document_bos(vocab, True, compat))


def masks_for(utts, cfg, seed, epoch):
    """The speech masks both methods use (drawn outside the timed parts: the naive method is
    timed on making ids from a given draw only, which flatters it)."""
    n = np.array([u.num_words for u in utts])
    return np.split(speech_masks(n, np.array([u.key for u in utts]), cfg, seed, epoch), np.cumsum(n)[:-1])


def ours_draw(batch, vocab, cfg, seed, epoch):
    """A new interleaving of utterances kept in their prepared form (what dynamic mode stores)."""
    mk = markers(vocab, cfg.compat)
    ids, offsets = il.assemble_batch(batch, il.draw_batch(batch, cfg, seed, epoch), mk)
    return np.split(ids, offsets[1:-1])


def naive_string(tok, words, units, lo, hi, mask):
    parts = [tok.bos_token]
    for a, b, speech in il.runs(mask):
        if speech and hi[b - 1] > lo[a]:
            parts.append("<speech>" + "".join(f"<Un{k}>" for k in units[lo[a]:hi[b - 1]]))
        elif parts[-1].startswith("<text>"):  # a unit-less speech span merges into the text
            parts[-1] += " " + " ".join(words[a:b])
        else:
            parts.append("<text>" + (" " if a > 0 else "") + " ".join(words[a:b]))
    parts.append(tok.eos_token)
    return "".join(parts)


def naive_ids(tok, vocab, al, rec, lo, hi, mask, compat):
    """One document by the string method: SlamKit's string and tokenizer call (+ EOD, the packing
    separator this tokenizer does not add), or the same method for the earlier layout."""
    if compat == "slamkit":
        ids = slamkit_reference.document_ids(tok, [w.strip() for w in al.words], al.starts, al.ends, mask,
                                             rec.durations, rec.units, rec.unit_seconds) + [vocab.eod]
    else:
        ids = tok(naive_string(tok, al.words, rec.units, lo, hi, mask), add_special_tokens=False)["input_ids"]
    return np.asarray(ids, dtype=np.int64)


def naive_draw(parsed, masks, vocab, compat):
    return [naive_ids(vocab.tokenizer, vocab, al, rec, u.lo, u.hi, mask, compat) for (u, al, rec), mask in zip(parsed, masks)]


def ours(lines, vocab, align, cfg, seed):
    """The library's static path: records read one by one, then prepared, drawn and assembled
    in batches of a preprocessing shard (1000 lines)."""
    mk = markers(vocab, cfg.compat)
    out = []
    for s in range(0, len(lines), 1000):
        records = [(f"units:{i + 1}", decode_json_line(line, f"units:{i + 1}")) for i, line in enumerate(lines[s:s + 1000], s)]
        kept, batch, _, errors = prepare_batch(records, vocab, align, cfg.compat, lines=lines[s:s + 1000])
        assert not errors and len(kept) == len(records)
        ids, offsets = il.assemble_batch(batch, il.draw_batch(batch, cfg, seed, 0), mk)
        out += np.split(ids, offsets[1:-1])
    return out


def naive(lines, raw_alignments, masks, vocab, compat):
    """SlamKit-style: json records, the alignment of each, units in each word's time range, the
    interleaved string, the HF tokenizer."""
    from megatron_slm.units.records import parse_record

    out = []
    for line, mask in zip(lines, masks):
        rec = parse_record(json.loads(line), "")
        al = parse_canonical(json.loads(raw_alignments[rec.id]), "")
        validate(al, rec.audio_seconds)
        lo, hi = (None, None) if compat == "slamkit" else il.word_unit_ranges(
            al.starts, al.ends, np.asarray(rec.durations), rec.unit_seconds, compat)
        out.append(naive_ids(vocab.tokenizer, vocab, al, rec, lo, hi, mask, compat))
    return out


def cpu_time(fn, *args):
    t0 = time.process_time()
    result = fn(*args)
    return time.process_time() - t0, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--utterances", type=int, default=3000, help="synthetic utterances (8-30 words each)")
    ap.add_argument("--num-units", type=int, default=500, help="K")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--compat", choices=("slamkit", "none"), default="slamkit", help="rule set of both methods")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="bench_preprocess_")
    meta = make_meta({"name": "synthetic", "frame_rate": 25.0, "version": 1}, args.num_units, "0" * 64, None, True,
                     args.compat)
    corpus = write_synthetic_corpus(tmp, args.utterances, k=args.num_units, words=(20, 50), seed=0, lexicon=20000,
                                    meta=meta)
    vocab = SpeechVocab.from_pretrained(TOKENIZER, num_units=args.num_units)
    align = AlignmentIndex(corpus.alignments)
    lines = open(corpus.units, encoding="utf-8").read().splitlines()
    cfg = InterleaveConfig(compat=args.compat)

    parsed = parse(lines, vocab, align, args.compat)
    masks1, masks0 = masks_for([u for u, _, _ in parsed], cfg, args.seed, 1), masks_for([u for u, _, _ in parsed], cfg, args.seed, 0)
    batch = il.PreparedBatch.from_utterances([u for u, _, _ in parsed])
    ours_draw(il.PreparedBatch.from_utterances([u for u, _, _ in parsed[:50]]), vocab, cfg, args.seed, 1)  # warm up
    naive_draw(parsed[:50], masks1[:50], vocab, args.compat)
    ta_ours, a = cpu_time(ours_draw, batch, vocab, cfg, args.seed, 1)
    ta_naive, b = cpu_time(naive_draw, parsed, masks1, vocab, args.compat)
    same_a = sum(np.array_equal(x, y) for x, y in zip(a, b))
    tokens_a = sum(len(x) for x in a)

    raw_alignments = {uid: entry[0] for uid, entry in align._entries.items()}
    lines = [line.encode("utf-8") for line in lines]
    tb_ours, a = cpu_time(ours, lines, vocab, align, cfg, args.seed)
    tb_naive, b = cpu_time(naive, lines, raw_alignments, masks0, vocab, args.compat)
    same_b = sum(np.array_equal(x, y) for x, y in zip(a, b))
    tokens_b = sum(len(x) for x in a)
    t_json, _ = cpu_time(lambda: [(json.loads(x), json.loads(raw_alignments[uid])) for x, uid in zip(lines, corpus.ids)])
    t_orjson, _ = cpu_time(lambda: [(loads(x), loads(raw_alignments[uid])) for x, uid in zip(lines, corpus.ids)])

    job = pp.PreprocessJob(kind="interleaved", tokenizer=TOKENIZER, out_prefix=os.path.join(tmp, "out"),
                           inputs=[corpus.units], alignments=corpus.alignments, seed=args.seed, progress=False,
                           interleave=cfg)
    t0 = time.process_time()
    meta = pp.run(job)
    t_full = time.process_time() - t0

    print(f"compat {args.compat}; corpus: {args.utterances} utterances, K={args.num_units}, {tokens_b} interleaved tokens per pass; "
          f"identical sequences: A {same_a}/{len(a)}, B {same_b}/{len(a)}")
    print(f"{'measurement':58s} {'CPU s':>7s} {'tokens/CPU-s':>13s}")
    rows = [("A naive: string + HF tokenizer (re-interleave)", ta_naive, tokens_a),
            ("A ours:  draw + assemble ids (re-interleave)", ta_ours, tokens_a),
            ("B naive: JSONL -> string + HF tokenizer", tb_naive, tokens_b),
            ("B ours:  JSONL -> ids", tb_ours, tokens_b),
            ("ours, full tools/preprocess_data (1 worker, with I/O)", t_full, meta["tokens"]["total"])]
    for name, t, n in rows:
        print(f"{name:58s} {t:7.2f} {n / t:13.0f}")
    print(f"ratio ours/naive: A (per new interleaving) {ta_naive / ta_ours:.1f}x, B (static, end to end) {tb_naive / tb_ours:.1f}x")
    print(f"B floor: only parsing the two JSON records of each utterance takes {100 * t_json / tb_naive:.0f}% of the naive "
          f"method's time with json, {100 * t_orjson / tb_naive:.0f}% with orjson (ours {100 * t_orjson / tb_ours:.0f}% of its own): "
          f"10x end to end would leave {max(10 - 100 * t_orjson / tb_naive, 0):.0f}% for everything else")


if __name__ == "__main__":
    main()
