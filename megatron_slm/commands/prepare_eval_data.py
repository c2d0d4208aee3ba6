"""Turn a spoken-LM benchmark folder into a scored-item JSONL for tools/eval_slm.py.

Benchmarks (sub-commands) and the layout each expects under --src:
  swuggy       ZeroSpeech 2021 sLM21 root (lexical/<split>/gold.csv + wavs); parts inter / oov
  sblimp       ZeroSpeech 2021 sLM21 root (syntactic/<split>/gold.csv + wavs); parts = phenomena
  ssc, tsc     Spoken / topic StoryCloze folder: <id>_correct.wav + <id>_incorrect.wav
  salmon       SALMon root: <part>/sample_<index>_<option>.wav (option 0 = positive)
  cross-modal  StoryCloze with prompts: <id>_mutual.{wav,txt}, <id>_correct.{wav,txt},
               <id>_incorrect.{wav,txt}; --direction s2t (spoken prompt, text endings) or t2s
  word-shuffle a sanity set from any corpus with units + word alignments (no audio needed)
Candidates are paired by the ids in file names / gold.csv, never by listing order; a missing
file or an incomplete pair is an error naming it.

Audio becomes units either with the units pipeline (--units-from mel|hubert --kmeans ...,
resumable: units are cached next to --out) or from a units JSONL made by tools/extract_units.py
(--units-file; matched by path or by id = path relative to --src without extension).

Examples:
  python tools/prepare_eval_data.py ssc --src data/sSC --out eval/ssc.jsonl \\
      --units-from hubert --model-dir models/mhubert-base-25hz --layer 11 --kmeans models/km500.npy
  python tools/prepare_eval_data.py swuggy --src data/sLM21 --split dev --out eval/swuggy.jsonl --units-file u.jsonl
  python tools/prepare_eval_data.py word-shuffle --units-file examples/data/tiny_corpus/units.jsonl \\
      --alignments examples/data/tiny_corpus/alignments.jsonl --out eval/word_shuffle.jsonl
"""
from __future__ import annotations

import argparse
import sys
import time

from megatron_slm.console import error
from megatron_slm.eval.items import ItemError, write_items
from megatron_slm.eval.benchmarks.materialize import UnitsSource, dump_summary, materialize
from megatron_slm.eval.benchmarks.registry import BENCHMARKS, read_specs
from megatron_slm.eval.benchmarks.salmon import SALMON_PARTS
from megatron_slm.eval.benchmarks.spec import ReadRequest
from megatron_slm.eval.benchmarks.word_shuffle import build_word_shuffle


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from megatron_slm.commands.unit_args import add_extractor_args, add_tokenizer_args, add_trust_pickle_arg

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("benchmark", choices=list(BENCHMARKS), help="which benchmark layout --src has")
    p.add_argument("--src", help="the benchmark folder (not used by word-shuffle)")
    p.add_argument("--out", required=True, help="output item file, e.g. eval/ssc.jsonl (eval_slm.py finds "
                                                "<data>/<task>.jsonl)")
    p.add_argument("--task", default=None, help="task name written into the items (default: the benchmark name, "
                                                "sc_s2t / sc_t2s for cross-modal)")
    p.add_argument("--split", default="dev", help="swuggy/sblimp: ZeroSpeech split folder (default dev; only dev has gold)")
    p.add_argument("--parts", nargs="+", default=None, help=f"salmon: parts to include (default: all present of "
                                                            f"{', '.join(SALMON_PARTS)})")
    p.add_argument("--direction", choices=("s2t", "t2s"), default="s2t",
                   help="cross-modal: s2t = spoken prompt + text endings, t2s = text prompt + spoken endings")
    p.add_argument("--alignments", help="word-shuffle: the corpus alignments.jsonl")
    p.add_argument("--seed", type=int, default=0, help="word-shuffle: seed of the word permutations")
    u = p.add_argument_group("units (one of --units-file, --kmeans with the feature options, or --tokenizer mimi)")
    u.add_argument("--units-file", help="precomputed units JSONL (with its .meta.json sidecar)")
    add_tokenizer_args(u)
    u.add_argument("--kmeans", help="k-means centroids for on-the-fly units (.npy, or a pickled sklearn KMeans with "
                                    "--trust-pickle)")
    add_trust_pickle_arg(u)
    add_extractor_args(p)
    p.add_argument("--units-from", dest="extractor", choices=("hubert", "mel"), help="alias of --extractor")
    p.add_argument("--cache", default=None, help="units cache for resuming (default: <out>.units.jsonl)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    if args.benchmark == "word-shuffle":
        if not (args.units_file and args.alignments):
            p.error("word-shuffle needs --units-file and --alignments")
    elif not args.src:
        p.error(f"{args.benchmark} needs --src (the benchmark folder)")
    return args


def units_source(args: argparse.Namespace) -> UnitsSource | None:
    if args.units_file:
        return UnitsSource.from_file(args.units_file, args.src)
    kind = args.tokenizer or args.extractor
    if not args.kmeans and kind != "mimi":
        return None
    from megatron_slm.units.tokenizers import build_tokenizer

    ex = build_tokenizer(kind, kmeans=args.kmeans, model_dir=args.model_dir, layer=args.layer,
                         num_codebooks=args.num_codebooks, device=args.device, audio_backend=args.audio_backend,
                         max_batch_seconds=args.max_batch_seconds, num_threads=args.num_threads, min_seconds=0.0,
                         dtype=args.dtype, streams=args.streams, compat=args.compat, trust_pickle=args.trust_pickle)
    return UnitsSource.from_extractor(ex, args.cache or args.out + ".units.jsonl", progress=not args.no_progress)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.time()
    try:
        if args.benchmark == "word-shuffle":
            from megatron_slm.units.records import compatibility_key, read_meta

            items, skipped = build_word_shuffle(args.units_file, args.alignments, args.seed, args.task or "word_shuffle")
            identity = compatibility_key(read_meta(args.units_file))
            if not items:
                first = f"; first: {skipped[0][0]}" if skipped else ""
                raise ItemError(f"{args.units_file}: no usable utterance for word-shuffle items, nothing written "
                                f"({len(skipped)} skipped{first})")
        else:
            specs = read_specs(args.benchmark, ReadRequest(args.src, args.task, args.split, args.parts, args.direction))
            items, identity = materialize(specs, units_source(args))
            skipped = []
        n = write_items(args.out, items[0].task if items else (args.task or args.benchmark), items, identity)
    except (ItemError, ValueError, FileNotFoundError) as e:
        error(e)
        return 1
    parts = sorted({it.part for it in items if it.part})
    extra = f" ({len(parts)} parts: {', '.join(parts[:8])}{' ...' if len(parts) > 8 else ''})" if parts else ""
    print(dump_summary(n, args.out, skipped, extra) + f"\ndone in {time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
