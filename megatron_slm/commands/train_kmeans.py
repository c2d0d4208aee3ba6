"""Train k-means centroids for speech units (mini-batch k-means, k-means++ init) on features
sampled from a corpus, and write them as a [K, D] float32 .npy for tools/extract_units.py.

Examples:
  python tools/train_kmeans.py --alignments examples/data/tiny_corpus/alignments.jsonl \\
      --extractor mel --k 100 --out km_mel100.npy
  python tools/train_kmeans.py --audio-dir /data/ja --extractor hubert --model-dir /models/mhubert-base-25hz \\
      --layer 11 --k 500 --max-frames 2000000 --out km500_ja.npy
"""
from __future__ import annotations

import argparse
import os
import random
import sys

from megatron_slm.console import error
from megatron_slm.commands.unit_args import add_extractor_args, add_input_args, resolve_inputs


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_input_args(p)
    add_extractor_args(p)
    g = p.add_argument_group("k-means")
    g.add_argument("--k", type=int, required=True, help="number of units (centroids)")
    g.add_argument("--out", required=True, help="output .npy path")
    g.add_argument("--max-frames", type=int, default=1_000_000,
                   help="feature frames sampled for training (files visited in random order; default 1M)")
    g.add_argument("--steps", type=int, default=300, help="mini-batch steps (default 300)")
    g.add_argument("--batch-size", type=int, default=4096, help="frames per mini-batch (default 4096)")
    g.add_argument("--seed", type=int, default=0, help="seed for file order, init and batches")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import numpy as np
    import torch
    from tqdm import tqdm

    from megatron_slm.audio.loader import AudioLoader
    from megatron_slm.units.extractors import build_extractor
    from megatron_slm.units.kmeans import inertia, train_minibatch_kmeans
    from megatron_slm.units.pipeline import FeatureStream, default_device

    try:
        if not args.out.endswith(".npy"):
            raise ValueError(f"--out {args.out!r} must end in .npy")
        left_out: list = []
        paths, ids = resolve_inputs(args, left_out)
        device = args.device or default_device()
        ext = build_extractor(args.extractor, model_dir=args.model_dir, layer=args.layer, device=device, dtype=args.dtype,
                              compat=args.compat)
        loader = AudioLoader(args.audio_backend, device, args.num_threads, max_batch_seconds=args.max_batch_seconds)
    except (OSError, ValueError, RuntimeError) as e:
        error(e)
        return 2

    order = list(range(len(paths)))
    random.Random(args.seed).shuffle(order)
    stream = FeatureStream(ext, loader, args.min_seconds, args.max_seconds, args.streams)
    stream.skipped.extend(left_out)
    path_of = {i: getattr(p, "path", p) for p, i in zip(paths, ids)}
    chunks, total, used, non_finite = [], 0, 0, []
    bar = tqdm(total=args.max_frames, desc="features", unit="frame")
    # Feed files in modest groups so we stop reading audio once enough frames are collected.
    group = 64
    for s in range(0, len(order), group):
        sel = order[s:s + group]
        for uid, feats in stream.features_for_files([paths[i] for i in sel], [ids[i] for i in sel]):
            if not torch.isfinite(feats).all():  # finite audio, yet the extractor overflowed
                non_finite.append(path_of[uid])
                continue
            chunks.append(feats.cpu())
            total += feats.shape[0]
            used += 1
            bar.update(feats.shape[0])
        if total >= args.max_frames:
            break
    bar.close()
    report_skips(stream)
    if non_finite:
        error(f"non-finite features from {len(non_finite)} file(s): {', '.join(non_finite[:5])}"
              f"{' ...' if len(non_finite) > 5 else ''}; a codebook trained with them would be NaN. Remove or "
              f"renormalise these files (or use --dtype float32 for HuBERT)")
        return 1
    if total < args.k:
        error(f"only {total} feature frames from {used} files; need at least --k {args.k}")
        return 1
    x = torch.cat(chunks)[: args.max_frames]
    try:
        centroids = train_minibatch_kmeans(x, args.k, args.batch_size, args.steps, seed=args.seed, progress=True)
    except ValueError as e:
        error(f"{e} (features of {used} files); nothing written to {args.out}")
        return 1
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    np.save(args.out, centroids)

    g = torch.Generator().manual_seed(args.seed + 1)
    random_c = x[torch.randperm(x.shape[0], generator=g)[: args.k]]
    print(f"trained k={args.k} on {x.shape[0]} frames (dim {x.shape[1]}) from {used} files; "
          f"inertia {inertia(x, centroids):.4f} (random centroids: {inertia(x, random_c):.4f}); wrote {args.out} "
          f"(features with --compat {args.compat}: extract units with the same)")
    return 0


def report_skips(stream) -> None:
    """The files left out (counted by reason) and the files kept with a remark (silence)."""
    from megatron_slm.audio.skips import reason_counts

    if stream.skipped:
        print(f"skipped {len(stream.skipped)} files ({reason_counts(stream.skipped)}):")
        for s in stream.skipped:
            print(f"  {s.path}: {s.reason}")
    if stream.warnings:
        print(f"warnings {len(stream.warnings)} ({reason_counts(stream.warnings)}):")
        for w in stream.warnings:
            print(f"  {w.path}: {w.reason}")


if __name__ == "__main__":
    sys.exit(main())
