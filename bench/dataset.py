#!/usr/bin/env python
"""Benchmark: training samples per second of our interleaved datasets vs Megatron's GPTDataset.

  GPTDataset       Megatron's dataset over the static interleaved .bin/.idx (no attention mask:
                   create_attention_mask=False, as our trainer builds masks itself)
  ours static      SLMDataset over the same files (+ modality ids and the loss_on mask)
  ours dynamic     SLMDataset over the dynamic layout of the same utterances: a fresh
                   interleaving drawn per (seed, epoch, utterance) while reading

All three read the same number of tokens (same utterances, same seq_length, samples in shuffled
order) in this process after their indices are built, taking turns over chunks of the samples;
index building is timed separately. Rates are given per CPU second of this process (the ratios
compared) and per wall second: on a shared machine wall time also counts other processes' turns.

Both interleavings follow --compat (default slamkit: SlamKit's sampler and layout).

  python bench/dataset.py --utterances 4000 --seq-length 2048 --samples 2000 [--compat slamkit|none]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings

warnings.filterwarnings("ignore")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import numpy as np  # noqa: E402
import torch  # noqa: E402

TOKENIZER = os.path.join(os.path.dirname(__file__), "..", "examples", "tokenizer", "tiny-bpe")


def build(cls, config, n):
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder

    t0 = time.perf_counter()
    ds = BlendedMegatronDatasetBuilder(cls, [n, 0, 0], lambda: True, config).build()[0]
    return ds, time.perf_counter() - t0


def read(ds, indices) -> np.ndarray:
    """(CPU seconds, wall seconds) to read the samples `indices` (each sample's tokens touched)."""
    t0, w0 = time.process_time(), time.perf_counter()
    for i in indices:
        np.asarray(ds[int(i)]["tokens"]).sum()
    return np.array([time.process_time() - t0, time.perf_counter() - w0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--utterances", type=int, default=4000)
    ap.add_argument("--seq-length", type=int, default=2048)
    ap.add_argument("--samples", type=int, default=2000, help="samples read from each dataset (spans several epochs)")
    ap.add_argument("--rounds", type=int, default=10, help="chunks the datasets take turns on (default 10)")
    ap.add_argument("--compat", choices=("slamkit", "none"), default="slamkit", help="interleaving rule set")
    args = ap.parse_args()

    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig

    from megatron_slm.config import InterleaveConfig
    from megatron_slm.data import preprocess as pp
    from megatron_slm.data.datasets import SLMDataset, SLMDatasetConfig
    from megatron_slm.testing.synthetic_units import write_synthetic_corpus
    from megatron_slm.units.records import make_meta
    from megatron_slm.vocab import SpeechVocab

    tmp = tempfile.mkdtemp(prefix="bench_dataset_")
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp}/pg", rank=0, world_size=1)
    meta = make_meta({"name": "synthetic", "frame_rate": 25.0, "version": 1}, 500, "0" * 64, None, True, args.compat)
    corpus = write_synthetic_corpus(tmp, args.utterances, k=500, words=(20, 50), seed=0, lexicon=20000, meta=meta)
    icfg = InterleaveConfig(compat=args.compat)
    common = dict(tokenizer=TOKENIZER, inputs=[corpus.units], alignments=corpus.alignments, seed=1234,
                  progress=False, workers=2, interleave=icfg)
    pp.run(pp.PreprocessJob(kind="interleaved", out_prefix=f"{tmp}/static", **common))
    pp.run(pp.PreprocessJob(kind="interleaved", out_prefix=f"{tmp}/dynamic", mode="dynamic", **common))
    vocab = SpeechVocab.from_pretrained(TOKENIZER, num_units=500)

    base = dict(random_seed=1234, sequence_length=args.seq_length, split="100,0,0", path_to_cache=f"{tmp}/cache",
                tokenizer=vocab, reset_position_ids=False, reset_attention_mask=False, eod_mask_loss=False,
                create_attention_mask=False)
    runs = [
        ("GPTDataset (Megatron)", GPTDataset, GPTDatasetConfig(blend=([f"{tmp}/static"], None), **base)),
        ("ours static", SLMDataset, SLMDatasetConfig(blend=([f"{tmp}/static"], None), **base)),
        ("ours dynamic", SLMDataset, SLMDatasetConfig(blend=([f"{tmp}/dynamic"], None), mode="dynamic",
                                                      interleave=icfg, **base)),
    ]
    built = []
    for name, cls, config in runs:
        ds, t_build = build(cls, config, args.samples)
        read(ds, range(min(50, args.samples)))  # warm the page cache
        built.append((name, ds, t_build))
    # rounds over chunks of the samples, the datasets taking turns in a rotating order: drifts of
    # this shared machine's speed hit all three alike
    elapsed = [np.zeros(2) for _ in built]
    chunks = np.array_split(np.arange(args.samples), args.rounds)
    for r, chunk in enumerate(chunks):
        for k in [(r + i) % len(built) for i in range(len(built))]:
            elapsed[k] += read(built[k][1], chunk)
    results = [(name, args.samples / t, t_build) for (name, _, t_build), t in zip(built, elapsed)]
    ref = results[0][1]
    print(f"compat {args.compat}: {args.utterances} utterances, seq_length {args.seq_length}, {args.samples} samples each")
    print(f"{'dataset':24s} {'samples/CPU-s':>14s} {'vs GPTDataset':>14s} {'samples/s wall':>15s} {'vs GPTDataset':>14s} "
          f"{'index build s':>14s}")
    for name, rate, t_build in results:
        cpu, wall = rate / ref
        print(f"{name:24s} {rate[0]:14.0f} {cpu:13.2f}x {rate[1]:15.0f} {wall:13.2f}x {t_build:14.2f}")
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
