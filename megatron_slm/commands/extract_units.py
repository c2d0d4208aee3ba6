"""Turn audio into discrete speech units (features -> nearest k-means centroid -> optional
dedup) and write one JSON record per utterance, plus the identity sidecar <out>.meta.json.

Runs on one process or under torchrun (each rank takes a disjoint share; rank 0 merges).
Resumable: rerun the same command after a crash and finished utterances are skipped.
Bad files (unreadable, empty, too short) are skipped, listed with the reason and counted.

Examples:
  python tools/extract_units.py --alignments examples/data/tiny_corpus/alignments.jsonl \\
      --extractor mel --kmeans examples/data/tiny_corpus/km_mel100.npy --out units.jsonl
  torchrun --nproc_per_node=8 tools/extract_units.py --audio-dir /data/librispeech --extractor hubert \\
      --model-dir /models/mhubert-base-25hz --layer 11 --kmeans /models/km500.bin --out units/ls.jsonl
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from megatron_slm.units.cli import add_extractor_args, add_input_args, resolve_inputs


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_input_args(p)
    add_extractor_args(p)
    g = p.add_argument_group("units")
    g.add_argument("--kmeans", required=True, help="centroids: .npy [K, D] or a pickled scikit-learn KMeans (e.g. TWIST km500)")
    g.add_argument("--out", required=True, help="output units JSONL (sidecar written to <out>.meta.json)")
    g.add_argument("--no-dedup", action="store_true", help="keep one unit per frame (durations all 1)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from tqdm import tqdm

    from megatron_slm.units import sharding
    from megatron_slm.units.pipeline import UnitExtractor
    from megatron_slm.units.records import compatibility_key, meta_path, portable_path, read_meta, write_meta

    rank, world = sharding.init_dist()
    try:
        paths, ids = resolve_inputs(args)
        ex = UnitExtractor.from_args(args.extractor, args.kmeans, args.model_dir, args.layer, args.device,
                                     args.audio_backend, args.max_batch_seconds, args.num_threads,
                                     collapse=not args.no_dedup, min_seconds=args.min_seconds,
                                     max_seconds=args.max_seconds, dtype=args.dtype, streams=args.streams)
        if os.path.exists(meta_path(args.out)) and compatibility_key(read_meta(args.out)) != compatibility_key(ex.meta):
            raise ValueError(f"{args.out} already holds units from a different extractor/k-means "
                             f"(see {meta_path(args.out)}); choose another --out")
    except (OSError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    out_dir = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    if rank == 0:
        meta = dict(ex.meta, kmeans=dict(ex.meta["kmeans"], path=portable_path(args.kmeans, out_dir)))
        write_meta(args.out, meta)
    sharding.repair_tail(sharding.part_path(args.out, rank))
    sharding.barrier()
    done = sharding.done_records(args.out)
    todo = sharding.shard([i for i in range(len(ids)) if ids[i] not in done], rank, world)
    items = ex.prepare([paths[i] for i in todo], [ids[i] for i in todo])

    total_s = sum(it.duration for it in items)
    bar = tqdm(total=round(total_s, 1), unit="s", desc=f"units[rank {rank}]" if world > 1 else "units",
               disable=rank != 0, bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s audio [{elapsed}<{remaining}{postfix}]")
    t0, n_new, secs = time.time(), 0, 0.0
    with open(sharding.part_path(args.out, rank), "a", encoding="utf-8") as f:
        for rec in ex.units_for_items(items):
            rec.path = portable_path(rec.path, out_dir)
            f.write(rec.to_json() + "\n")
            n_new += 1
            secs += rec.audio_seconds
            bar.update(rec.audio_seconds)
            if n_new % 16 == 0:
                f.flush()
                bar.set_postfix_str(f"{secs / 3600 / max(time.time() - t0, 1e-9):.4f} h audio/s")
    bar.close()
    elapsed = time.time() - t0

    # Per-rank skip lists go through files so rank 0 can report them all.
    skip_file = f"{args.out}.skipped{rank}.json"
    with open(skip_file, "w", encoding="utf-8") as f:
        json.dump([[s.path, s.reason] for s in ex.skipped], f)
    sharding.barrier()
    if rank != 0:
        return 0
    skipped = []
    for r in range(world):
        p = f"{args.out}.skipped{r}.json"
        with open(p, encoding="utf-8") as f:
            skipped += json.load(f)
        os.remove(p)
    total = sharding.merge(args.out, ids)
    rate = secs / elapsed if elapsed > 0 else 0.0
    print(f"units: {total} utterances in {args.out} ({n_new} new on rank 0, {len(done)} done before, "
          f"{world} rank(s)); {secs / 3600:.3f} h audio in {elapsed:.1f} s on rank 0 ({rate:.1f} s audio/s); "
          f"skipped {len(skipped)}")
    if skipped:
        with open(args.out + ".skipped.tsv", "w", encoding="utf-8") as f:
            f.writelines(f"{p}\t{why}\n" for p, why in skipped)
        for p, why in skipped[:20]:
            print(f"  skipped {p}: {why}")
        if len(skipped) > 20:
            print(f"  ... {len(skipped) - 20} more in {args.out}.skipped.tsv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
