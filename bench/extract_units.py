#!/usr/bin/env python
"""Benchmark: audio seconds per wall second of unit extraction with an mhubert-base-sized
random HuBERT (768 hidden, 12 layers, 25 Hz conv stack) and a 500-unit codebook, over the
bundled corpus repeated to about --seconds of audio.

  ours : UnitExtractor (DALI decode when installed, length-bucketed batches, encoder cut at
         --layer, torch nearest-centroid assignment), in float32 and in its default precision
         (`--dtype auto`: bfloat16 where the CPU has native bf16)
  naive: per file: soundfile load, scipy resample, full float32 HubertModel forward, sklearn predict

The codebook is a k-means fitted on the model's own layer features of the corpus (as real
codebooks are), so unit agreement between precisions measures real near-ties, not ties between
random centroids. All runs are in this process on the same files.
  python bench/extract_units.py --seconds 600

--tokenizer mimi: a random Mimi of the default size (79M parameters, codebooks randomised so codes
vary), float32, 8 codebooks:
  ours : MimiUnitExtractor (the same loader and screen, resampled to 24 kHz, concurrent streams)
  naive: per file: soundfile load, scipy resample to 24 kHz, MimiModel.encode
and the sequence length a tokenizer costs: tokens per audio second of Mimi at 1, 4 and 8
codebooks (measured on the files) beside k-means units deduplicated (the bundled mel-100 units,
measured, and HuBERT-500 from the SIMS data table: 3.5B tokens from 50K hours of Libri-Light).
  python bench/extract_units.py --tokenizer mimi --seconds 120
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import numpy as np
import torch

from megatron_slm.audio.decode_soundfile import load_audio
from megatron_slm.audio.loader import AudioLoader
from megatron_slm.audio.sources import list_audio_files
from megatron_slm.units.extractors import HubertExtractor, resolve_dtype
from megatron_slm.units.pipeline import UnitExtractor

CORPUS = os.path.join(os.path.dirname(__file__), "..", "examples", "data", "tiny_corpus", "audio")


def mhubert_base_25hz_random():
    from transformers import HubertConfig, HubertModel

    cfg = HubertConfig(conv_dim=(512,) * 8, conv_stride=(5, 2, 2, 2, 2, 2, 2, 2), conv_kernel=(10, 3, 3, 3, 3, 2, 2, 2),
                       feat_extract_norm="group")
    torch.manual_seed(0)
    return HubertModel(cfg).eval()


def fitted_sklearn_kmeans(model, paths, layer: int, k: int):
    """sklearn KMeans fitted on the float32 layer features of `paths` (the un-repeated corpus)."""
    from sklearn.cluster import KMeans

    with torch.inference_mode():
        x = np.concatenate([model(torch.from_numpy(load_audio(p))[None], output_hidden_states=True)
                            .hidden_states[layer][0].numpy() for p in paths])
    return KMeans(n_clusters=k, n_init=1, max_iter=30, random_state=0).fit(x)


def naive(paths, model, km, layer):
    out = {}
    with torch.inference_mode():
        for p in paths:
            wave = torch.from_numpy(load_audio(p))[None]  # soundfile + resample_poly
            feats = model(wave, output_hidden_states=True).hidden_states[layer][0].numpy()
            out[os.path.splitext(os.path.basename(p))[0]] = km.predict(feats)
    return out


def take_turns(methods: dict, paths: list, rounds: int) -> tuple[dict, dict]:
    """Rounds over chunks of the files, rotating the order of the methods: slow drifts of this
    shared machine hit every method alike. Returns (seconds, outputs by id) per method."""
    rounds = max(1, min(rounds, len(paths)))
    chunks = [paths[i::rounds] for i in range(rounds)]
    elapsed, out = dict.fromkeys(methods, 0.0), {name: {} for name in methods}
    names = list(methods)
    for r, chunk in enumerate(chunks):
        for name in names[r % len(names):] + names[:r % len(names)]:
            t = time.perf_counter()
            out[name].update(methods[name](chunk))
            elapsed[name] += time.perf_counter() - t
    return elapsed, out


def mimi_bench(paths: list, total: float, rounds: int, audio_backend: str) -> None:
    from transformers import MimiConfig

    from megatron_slm.testing.tiny_mimi import TINY, make_mimi
    from megatron_slm.units.mimi import MimiCodec, MimiUnitExtractor
    from megatron_slm.units.records import iter_records

    n_q = 8
    default = MimiConfig()
    model = make_mimi(0, **{k: getattr(default, k) for k in TINY})  # the default size, random codebooks
    print(f"Mimi: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, {n_q} codebooks of "
          f"{default.codebook_size}")

    def naive_mimi(chunk):
        out = {}
        with torch.inference_mode():
            for p in chunk:
                wave = torch.from_numpy(load_audio(p, 24000))[None, None]
                out[os.path.splitext(os.path.basename(p))[0]] = model.encode(wave, num_quantizers=n_q).audio_codes[0].T.numpy()
        return out

    ex = MimiUnitExtractor(MimiCodec(model, n_q), AudioLoader(audio_backend, "cpu", sample_rate=24000))

    def ours(chunk):
        return {r.id: ex.inventory.unflatten(r.units) for r in ex.units_for_files(chunk)}

    methods = {"naive per-file MimiModel.encode loop": naive_mimi,
               f"ours ({ex.loader.backend}, {ex.streams} stream{'s' * (ex.streams > 1)})": ours}
    elapsed, codes = take_turns(methods, paths, rounds)
    (ref_name, ref), (name, got) = codes.items()
    equal = np.mean([np.array_equal(got[i], ref[i]) for i in ref])
    print(f"{ref_name:44s}: {total / elapsed[ref_name]:6.2f} audio s/s  ({elapsed[ref_name]:.1f} s)")
    print(f"{name:44s}: {total / elapsed[name]:6.2f} audio s/s  ({elapsed[name]:.1f} s)  speedup "
          f"{elapsed[ref_name] / elapsed[name]:.2f}x, utterances with codes equal to naive's {100 * equal:.1f}%")

    frames = sum(len(c) for c in ref.values())
    print("\ntokens per audio second (sequence length a tokenizer costs)")
    for q in (1, 4, 8):
        print(f"  Mimi, {q} codebook{'s' * (q > 1)} (no dedup){'':17s}: {frames * q / total:6.1f}")
    recs = list(iter_records(os.path.join(os.path.dirname(CORPUS), "units.jsonl")))
    print(f"  mel + k-means 100, dedup (bundled units)   : "
          f"{sum(len(r.units) for r in recs) / sum(r.audio_seconds for r in recs):6.1f}")
    print(f"  HuBERT-500 25 Hz, dedup (SIMS data table)  : {3.5e9 / (50e3 * 3600):6.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", choices=("hubert", "mimi"), default="hubert",
                    help="hubert (+ k-means, default) or mimi (the codec)")
    ap.add_argument("--seconds", type=float, default=600, help="audio to process per method (default 600)")
    ap.add_argument("--layer", type=int, default=11)
    ap.add_argument("--k", type=int, default=500)
    ap.add_argument("--max-batch-seconds", type=float, default=None, help="default: the loader's (CPU: 1 utterance)")
    ap.add_argument("--audio-backend", default="auto")
    ap.add_argument("--dtype", default="auto", help="precision of our last run (default auto)")
    ap.add_argument("--rounds", type=int, default=6, help="chunks the methods take turns on (default 6)")
    args = ap.parse_args()

    src = list_audio_files(CORPUS)
    secs = [len(load_audio(p)) / 16000 for p in src]
    tmp = tempfile.mkdtemp(prefix="bench_units_")
    paths, total, rep = [], 0.0, 0
    while total < args.seconds:
        for p, s in zip(src, secs):
            dst = os.path.join(tmp, f"r{rep}_{os.path.basename(p)}")
            shutil.copy(p, dst)
            paths.append(dst)
            total += s
            if total >= args.seconds:
                break
        rep += 1
    print(f"{len(paths)} files, {total:.0f} s of audio, torch threads {torch.get_num_threads()}")
    if args.tokenizer == "mimi":
        mimi_bench(paths, total, args.rounds, args.audio_backend)
        shutil.rmtree(tmp)
        return

    model = mhubert_base_25hz_random()
    km = fitted_sklearn_kmeans(model, src, args.layer, args.k)
    centroids = km.cluster_centers_.astype(np.float32)
    loader = AudioLoader(args.audio_backend, "cpu", max_batch_seconds=args.max_batch_seconds)

    def ours(dtype_name: str, streams: int | None):
        ex = UnitExtractor(HubertExtractor(mhubert_base_25hz_random(), args.layer, dtype=resolve_dtype(dtype_name, "cpu")),
                           centroids, loader, collapse=False, streams=streams)
        return lambda chunk: {r.id: np.asarray(r.units) for r in ex.units_for_files(chunk)}, ex.streams

    methods = {"naive per-file loop (float32)": lambda chunk: naive(chunk, model, km, args.layer)}
    for dtype_name, streams in (("float32", 1), ("float32", None), (args.dtype, None)):
        fn, n = ours(dtype_name, streams)
        shown = dtype_name + (f"={str(resolve_dtype(dtype_name, 'cpu'))[6:]}" if dtype_name == "auto" else "")
        methods[f"ours ({loader.backend}, {shown}, {n} stream{'s' * (n > 1)})"] = fn
    elapsed, units = take_turns(methods, paths, args.rounds)
    names = list(methods)
    shutil.rmtree(tmp)

    ref_name = names[0]
    ref = units[ref_name]
    print(f"{ref_name:44s}: {total / elapsed[ref_name]:6.1f} audio s/s  ({elapsed[ref_name]:.1f} s)")
    for name in names[1:]:
        got = units[name]
        agree = np.mean([np.mean(got[i] == ref[i]) if got[i].size == ref[i].size else 0.0 for i in ref])
        print(f"{name:44s}: {total / elapsed[name]:6.1f} audio s/s  ({elapsed[name]:.1f} s)  "
              f"speedup {elapsed[ref_name] / elapsed[name]:.2f}x, units equal to naive's {100 * agree:.2f}%")

if __name__ == "__main__":
    main()
