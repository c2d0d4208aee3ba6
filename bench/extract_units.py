#!/usr/bin/env python
"""Benchmark: audio seconds per wall second of unit extraction with an mhubert-base-sized
random HuBERT (768 hidden, 12 layers, 25 Hz conv stack) and a 500-unit codebook, over the
bundled corpus repeated to about --seconds of audio.

  ours : UnitExtractor (DALI decode when installed, length-bucketed batches, encoder cut at
         --layer, torch nearest-centroid assignment)
  naive: per file: soundfile load, scipy resample, full HubertModel forward, sklearn predict

Both run in this process on the same files; the units are checked to agree.
  python bench/extract_units.py --seconds 600
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import numpy as np
import torch

from megatron_slm.units.audio import AudioLoader, list_audio_files, load_audio
from megatron_slm.units.extractors import HubertExtractor
from megatron_slm.units.pipeline import UnitExtractor

CORPUS = os.path.join(os.path.dirname(__file__), "..", "examples", "data", "tiny_corpus", "audio")


def mhubert_base_25hz_random():
    from transformers import HubertConfig, HubertModel

    cfg = HubertConfig(conv_dim=(512,) * 8, conv_stride=(5, 2, 2, 2, 2, 2, 2, 2), conv_kernel=(10, 3, 3, 3, 3, 2, 2, 2),
                       feat_extract_norm="group")
    torch.manual_seed(0)
    return HubertModel(cfg).eval()


def fitted_sklearn_kmeans(dim: int, k: int):
    from sklearn.cluster import KMeans

    x = np.random.default_rng(0).normal(size=(k * 2, dim)).astype(np.float32)
    return KMeans(n_clusters=k, n_init=1, max_iter=1, random_state=0).fit(x)


def naive(paths, model, km, layer):
    out = {}
    with torch.inference_mode():
        for p in paths:
            wave = torch.from_numpy(load_audio(p))[None]  # soundfile + resample_poly
            feats = model(wave, output_hidden_states=True).hidden_states[layer][0].numpy()
            out[os.path.splitext(os.path.basename(p))[0]] = km.predict(feats)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=600, help="audio to process per method (default 600)")
    ap.add_argument("--layer", type=int, default=11)
    ap.add_argument("--k", type=int, default=500)
    ap.add_argument("--max-batch-seconds", type=float, default=None, help="default: the loader's (CPU: 1 utterance)")
    ap.add_argument("--audio-backend", default="auto")
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

    km = fitted_sklearn_kmeans(768, args.k)
    model = mhubert_base_25hz_random()
    t = time.perf_counter()
    ref = naive(paths, model, km, args.layer)
    t_naive = time.perf_counter() - t

    loader = AudioLoader(args.audio_backend, "cpu", max_batch_seconds=args.max_batch_seconds)
    ours = UnitExtractor(HubertExtractor(mhubert_base_25hz_random(), args.layer),
                         km.cluster_centers_.astype(np.float32), loader, collapse=False)
    t = time.perf_counter()
    got = {r.id: np.asarray(r.units) for r in ours.units_for_files(paths)}
    t_ours = time.perf_counter() - t
    shutil.rmtree(tmp)

    agree = np.mean([np.mean(got[i] == ref[i]) if got[i].size == ref[i].size else 0.0 for i in ref])
    print(f"naive per-file loop : {total / t_naive:7.1f} audio s/s  ({t_naive:.1f} s)")
    print(f"ours (batched, {ours.loader.backend}): {total / t_ours:7.1f} audio s/s  ({t_ours:.1f} s)")
    print(f"speedup {t_naive / t_ours:.2f}x; unit agreement {agree:.4f} (float rounding may flip near-ties)")


if __name__ == "__main__":
    main()
