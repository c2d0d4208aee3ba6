"""Turn audio into discrete speech units and write one JSON record per utterance, plus the
identity sidecar <out>.meta.json. --tokenizer hubert/mel (default: --extractor): features ->
nearest k-means centroid -> optional dedup; --tokenizer mimi: the Mimi codec's first
--num-codebooks codebooks at 12.5 Hz (24 kHz input), frames flattened in codebook order, no dedup.

Runs on one process or under torchrun (each rank takes a disjoint share; rank 0 merges).
Resumable: rerun the same command after a crash and finished utterances are skipped.
Bad files (unreadable, empty, too short, truncated, NaN/Inf samples, not a regular file) are
skipped, listed with the reason and counted; silent files are kept and reported.

Examples:
  python tools/extract_units.py --alignments examples/data/tiny_corpus/alignments.jsonl \\
      --extractor mel --kmeans examples/data/tiny_corpus/km_mel100.npy --out units.jsonl
  torchrun --nproc_per_node=8 tools/extract_units.py --audio-dir /data/librispeech --extractor hubert \\
      --model-dir /models/mhubert-base-25hz --layer 11 --kmeans /models/km500.npy --out units/ls.jsonl
  python tools/extract_units.py --alignments corpus/alignments.jsonl --tokenizer mimi --model-dir /models/mimi \
      --num-codebooks 8 --out units/mimi8.jsonl
"""
from __future__ import annotations

import argparse
import os
import sys

from megatron_slm.console import error
from megatron_slm.commands.unit_args import (add_extractor_args, add_input_args, add_tokenizer_args,
                                             add_trust_pickle_arg, resolve_inputs)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_input_args(p)
    add_extractor_args(p)
    g = p.add_argument_group("units")
    add_tokenizer_args(g)
    g.add_argument("--kmeans", help="hubert/mel: centroids: .npy [K, D], or a pickled scikit-learn KMeans (e.g. "
                                    "TWIST km500) with --trust-pickle")
    add_trust_pickle_arg(g)
    g.add_argument("--out", required=True, help="output units JSONL (sidecar written to <out>.meta.json)")
    dd = g.add_mutually_exclusive_group()
    dd.add_argument("--no-dedup", dest="dedup", action="store_false", default=None,
                    help="keep one unit per frame (durations all 1; always so for mimi)")
    dd.add_argument("--dedup", dest="dedup", action="store_true",
                    help="collapse consecutive duplicates (the default for hubert/mel; refused for mimi)")
    g.add_argument("--cuts-out", default=None,
                   help="Lhotse --alignments: also write the cuts with their units in the custom field "
                        "'speech_units' (a CutSet .jsonl.gz; for a Shar input, a directory of Shar field shards)")
    args = p.parse_args(argv)
    args.tokenizer = args.tokenizer or args.extractor
    if args.tokenizer != "mimi" and not args.kmeans:
        p.error(f"--tokenizer {args.tokenizer} needs --kmeans")
    if args.cuts_out and not args.alignments:
        p.error("--cuts-out writes units back into a Lhotse manifest given as --alignments")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    from megatron_slm.units.extract import check_compatible_output, extract_to_jsonl
    from megatron_slm.units.tokenizers import build_tokenizer

    try:
        left_out: list = []  # input entries no decoder may open (a FIFO, a non-audio name)
        paths, ids = resolve_inputs(args, left_out)
        ex = build_tokenizer(args.tokenizer, kmeans=args.kmeans, model_dir=args.model_dir, layer=args.layer,
                             num_codebooks=args.num_codebooks, device=args.device, audio_backend=args.audio_backend,
                             max_batch_seconds=args.max_batch_seconds, num_threads=args.num_threads,
                             dedup=args.dedup, min_seconds=args.min_seconds, max_seconds=args.max_seconds,
                             dtype=args.dtype, streams=args.streams, compat=args.compat,
                             trust_pickle=args.trust_pickle)
        check_compatible_output(args.out, ex.meta)
    except (OSError, ValueError, RuntimeError) as e:
        error(e)
        return 2
    if int(os.environ.get("RANK", 0)) == 0:  # every rank lists the inputs; one reports them
        ex.skipped.extend(left_out)
    summary = extract_to_jsonl(ex, paths, ids, args.out, kmeans_path=args.kmeans)
    if int(os.environ.get("RANK", 0)) == 0:
        print("\n".join(summary.lines()))
        if args.cuts_out:
            from megatron_slm.units.lhotse_export import write_units

            n = write_units(args.alignments, args.out, args.cuts_out)
            print(f"cuts: {n['cuts']} written to {args.cuts_out}, {n['with_units']} with units "
                  f"(custom field 'speech_units')")
    return 0


if __name__ == "__main__":
    sys.exit(main())
