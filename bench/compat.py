#!/usr/bin/env python
"""Benchmark: what `--compat slamkit` changes against `--compat none`, measured (docs/data.md,
docs/units.md). Prints four tables:

  1. samplers: speech fraction and mean speech-span length (words) by utterance length, for the
     poisson (lambda=10, eta=0.3), span (p=0.1, 10 words) and random methods under both rule
     sets, next to SlamKit's own algorithm run one utterance at a time (the plain-Python
     reference of megatron_slm/testing/slamkit_reference.py); then draw throughput
  2. the bundled corpus (examples/data/tiny_corpus, 43 utterances): speech fraction and mean
     span of its epoch-0 draws over many seeds, and how many speech spans get the same unit runs
     from the frame-centre rule (none) as from SlamKit's bisect on run end times (slamkit)
  3. HuBERT input padding: frames whose unit is the same with and without SlamKit's 40 zero
     samples on each side (a random mhubert-base-25hz-shaped model, layer 11, a scikit-learn
     KMeans fitted on the padded features of the bundled audio); --skip-hubert leaves it out
  4. scoring: mean |difference| of the per-candidate mean log-likelihood between the two
     restrict=speech conventions (SlamKit keeps BOS and EOS in the softmax) and without restriction,
     on the bundled word-shuffle items and a random tiny Llama

  python bench/compat.py [--docs 2000] [--seeds 200] [--skip-hubert]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

warnings.filterwarnings("ignore")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import numpy as np  # noqa: E402

from megatron_slm.config import InterleaveConfig  # noqa: E402
from megatron_slm.data import interleave as il  # noqa: E402
from megatron_slm.data.spans import speech_masks  # noqa: E402
from megatron_slm.testing import slamkit_reference as ref  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), "..")
CORPUS = os.path.join(ROOT, "examples", "data", "tiny_corpus")
TOKENIZER = os.path.join(ROOT, "examples", "tokenizer", "tiny-bpe")
LENGTHS = (10, 20, 35, 60, 120, 300)
METHODS = {"poisson": dict(method="poisson", mean_span_words=10.0, speech_fraction=0.3),
           "span": dict(method="span", span_prob=0.1, span_words=10), "random": dict(method="random")}


def stats(masks) -> tuple[float, float]:
    spans = [b - a for m in masks for a, b, sp in il.runs(m) if sp]
    return float(np.mean([m.mean() for m in masks])), float(np.mean(spans)) if spans else 0.0


def reference_masks(method: str, n: int, docs: int, rng) -> list:
    draw = {"poisson": lambda: ref.poisson_words(n, 10, 0.3, rng), "span": lambda: ref.span_words(n, 0.1, 10, rng),
            "random": lambda: ref.random_words(n, rng)}[method]
    return [draw() for _ in range(docs)]


def sampler_table(docs: int) -> None:
    print(f"1. samplers: speech fraction / mean span (words), {docs} utterances per length")
    print(f"{'method':8s} {'words':>5s} {'none':>14s} {'slamkit':>14s} {'SlamKit reference':>18s}")
    rng = np.random.default_rng(0)
    for name, kw in METHODS.items():
        for n in LENGTHS:
            row = []
            for compat in ("none", "slamkit"):
                cfg = InterleaveConfig(compat=compat, **kw)
                row.append(stats(speech_masks(np.full(docs, n), np.arange(docs), cfg, 1234, 0).reshape(docs, n)))
            row.append(stats(reference_masks(name, n, docs, rng)))
            print(f"{name:8s} {n:5d} " + " ".join(f"{f:6.2f} / {s:5.2f}" for f, s in row))
    lengths = np.random.default_rng(1).integers(20, 51, 20000)
    print("   draw throughput, poisson, 20000 utterances of 20-50 words:", end="")
    for compat in ("none", "slamkit"):
        cfg = InterleaveConfig(compat=compat)
        t0 = time.perf_counter()
        speech_masks(lengths, np.arange(len(lengths)), cfg, 1, 0)
        print(f"  {compat} {lengths.sum() / (time.perf_counter() - t0) / 1e6:.1f} M words/s", end="")
    t0 = time.perf_counter()
    for k in lengths[:2000]:
        ref.poisson_words(int(k), 10, 0.3, rng)
    print(f"  SlamKit loop {lengths[:2000].sum() / (time.perf_counter() - t0) / 1e6:.2f} M words/s")


def corpus_table(seeds: int) -> None:
    import json

    from megatron_slm.corpus.alignments import AlignmentIndex
    from megatron_slm.data.prepare import prepare_interleaved
    from megatron_slm.vocab import SpeechVocab

    vocab = SpeechVocab.from_pretrained(TOKENIZER, num_units=100)
    align = AlignmentIndex(os.path.join(CORPUS, "alignments.jsonl"))
    records = [json.loads(x) for x in open(os.path.join(CORPUS, "units.jsonl"), encoding="utf-8")]
    prepared = {c: [prepare_interleaved(r, "x", vocab, align, c)[0] for r in records] for c in ("none", "slamkit")}
    n = np.array([u.num_words for u in prepared["none"]])
    keys = np.array([u.key for u in prepared["none"]])
    print(f"\n2. bundled corpus: {len(records)} utterances ({n.min()}-{n.max()} words, mean {n.mean():.1f}), "
          f"epoch-0 draws of {seeds} seeds")
    same = spans = 0
    for compat in ("none", "slamkit"):
        cfg = InterleaveConfig(compat=compat)
        masks = [m for s in range(seeds) for m in np.split(speech_masks(n, keys, cfg, s, 0), np.cumsum(n)[:-1])]
        frac, span = stats(masks)
        print(f"   {compat:8s} speech fraction {frac:.2f}, mean span {span:.2f} words")
        if compat == "slamkit":  # the unit runs each rule gives these speech spans
            for d, m in enumerate(masks):
                a_, b_ = prepared["none"][d % len(records)], prepared["slamkit"][d % len(records)]
                for a, b, sp in il.runs(m):
                    if sp:
                        spans += 1
                        same += (a_.lo[a], max(a_.hi[b - 1], a_.lo[a])) == (b_.lo[a], max(b_.hi[b - 1], b_.lo[a]))
    print(f"   unit runs of a speech span: the frame-centre rule picks SlamKit's runs for {100 * same / spans:.0f}% "
          f"of {spans} spans")


def hubert_table() -> None:
    import glob

    import torch

    from extract_units import fitted_sklearn_kmeans, mhubert_base_25hz_random
    from megatron_slm.audio.decode_soundfile import load_audio
    from megatron_slm.units.extractors import HubertExtractor

    paths = sorted(glob.glob(os.path.join(CORPUS, "audio", "*.flac")))
    model = mhubert_base_25hz_random()
    layer = 11

    class Padded(torch.nn.Module):  # the k-means is fitted on what SlamKit extracts: padded input
        def forward(self, x, output_hidden_states=True):
            return model(torch.nn.functional.pad(x, (40, 40)), output_hidden_states=output_hidden_states)

    km = fitted_sklearn_kmeans(Padded(), paths, layer, 100)
    same = total = 0
    t0 = time.perf_counter()
    ext = {p: HubertExtractor(mhubert_base_25hz_random(), layer, input_padding=p) for p in (0, 40)}
    for path in paths:
        wave = torch.from_numpy(load_audio(path))[None]
        units = {}
        for p, e in ext.items():
            feats, frames = e(wave, torch.tensor([wave.shape[1]]))
            units[p] = km.predict(feats[0, :int(frames[0])].numpy())
        m = min(len(units[0]), len(units[40]))
        same += int((units[0][:m] == units[40][:m]).sum())
        total += m
    print(f"\n3. HuBERT input padding (random mhubert-base-25hz, layer {layer}, KMeans k=100 on padded features, "
          f"{len(paths)} files, {time.perf_counter() - t0:.0f} s):")
    print(f"   unpadded units equal the padded (SlamKit) ones on {100 * same / total:.1f}% of {total} frames")


def scoring_table() -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from megatron_slm.eval.likelihood import HFBackend
    from megatron_slm.eval.benchmarks.word_shuffle import build_word_shuffle
    from megatron_slm.eval.scoring import score_items
    from megatron_slm.vocab import SpeechVocab

    vocab = SpeechVocab.from_pretrained(TOKENIZER, num_units=100)
    items, _ = build_word_shuffle(os.path.join(CORPUS, "units.jsonl"), os.path.join(CORPUS, "alignments.jsonl"), 0)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=vocab.vocab_size, hidden_size=64, intermediate_size=128,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                         bos_token_id=vocab.bos, eos_token_id=vocab.eod)).eval()
    print(f"\n4. scoring ({len(items)} word-shuffle items, 2 candidates each, random tiny Llama):")
    for restrict in ("speech", None):
        got = {c: score_items(items, vocab, HFBackend(model, vocab, restrict=restrict, compat=c)) for c in ("none", "slamkit")}
        diff = [abs(a - b) for x, y in zip(got["none"], got["slamkit"])
                for a, b in zip([x.positive, *x.negatives], [y.positive, *y.negatives])]
        print(f"   restrict={restrict}: mean |LL(slamkit) - LL(none)| per candidate {np.mean(diff):.2e} "
              f"(max {np.max(diff):.2e})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=2000, help="utterances per length in table 1")
    ap.add_argument("--seeds", type=int, default=200, help="draws of the bundled corpus in table 2")
    ap.add_argument("--skip-hubert", action="store_true", help="leave out table 3 (a HuBERT-base forward per file)")
    args = ap.parse_args()
    sampler_table(args.docs)
    corpus_table(args.seeds)
    if not args.skip_hubert:
        hubert_table()
    scoring_table()


if __name__ == "__main__":
    main()
