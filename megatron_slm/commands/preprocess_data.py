"""Build Megatron indexed datasets (.bin/.idx + <prefix>.meta.json) for speech-text LM training.

  interleaved  units JSONL + word alignments -> interleaved speech/text documents
  speech       units JSONL                   -> speech-only documents ([BOS] units [EOD])
  text         text JSONL                    -> text-only documents ([BOS] text [EOD])
  preference   prompt/chosen/rejected JSONL  -> DPO pairs (ours or SlamKit's preference features)
  sft          prompt/response JSONL         -> SFT examples (loss on the response only)

Examples:
  python tools/preprocess_data.py interleaved --tokenizer ckpt/llama3b-slm/tokenizer \\
      --units units/ls.jsonl --alignments align/ls.jsonl --out-prefix data/ls_inter --workers 16
  python tools/preprocess_data.py speech --tokenizer ... --units units/ll.jsonl --out-prefix data/ll_speech
  python tools/preprocess_data.py text --tokenizer ... --input 'redpajama/*.jsonl' --text-key text --out-prefix data/rp_text

Bad records (malformed JSON, non-UTF-8, units outside [0, K), alignments without units and vice
versa, empty transcripts) are skipped and counted in the summary and the sidecar; --strict stops
at the first one instead. A killed run resumes from its finished shards when re-run with the same
arguments; the .idx file only appears once the dataset is complete.
"""
from __future__ import annotations

import argparse
import glob
import sys

from megatron_slm.console import error

# vocab.DEFAULT_NUM_UNITS, spelled out here: importing vocab (numpy) would slow --help (a test keeps them equal)
SIMS_NUM_UNITS = 500


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="kind", required=True, metavar="{interleaved,speech,text,preference,sft}")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--tokenizer", required=True, help="base or extended HF tokenizer dir, or a sentencepiece .model")
        p.add_argument("--out-prefix", required=True, help="output path prefix: writes PREFIX.bin, PREFIX.idx, PREFIX.meta.json")
        p.add_argument("--workers", type=int, default=1, help="parallel worker processes (output does not depend on it)")
        p.add_argument("--strict", action="store_true", help="stop at the first bad record instead of skipping it")
        p.add_argument("--shard-lines", type=int, default=1000, help="input lines per shard (the unit of resume)")
        p.add_argument("--no-bos", dest="add_bos", action="store_false", help="do not start documents with the tokenizer's BOS")
        p.add_argument("--match", action="append", default=[], metavar="PATH",
                       help="refuse unless the vocabulary/units agree with this dataset prefix, sidecar or checkpoint (repeatable)")
        p.add_argument("--num-units", type=int, default=None, help=f"K; default: the units sidecar's k, else the K an extended tokenizer holds, else {SIMS_NUM_UNITS} (SIMS)")
        p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("interleaved", help="units + alignments -> interleaved documents",
                       description="Interleave speech units and text over aligned words (SIMS recipe).")
    common(p)
    p.add_argument("--units", required=True, help="units JSONL (with its .meta.json identity sidecar)")
    p.add_argument("--alignments", required=True, help="canonical alignment JSONL, a dir of MFA .TextGrid, a dir of "
                   "Whisper word-timestamp .json, or a Lhotse CutSet / supervisions manifest / Shar dir")
    p.add_argument("--alignment-format", choices=["auto", "jsonl", "textgrid", "whisper", "lhotse"], default="auto")
    p.add_argument("--mode", choices=["static", "dynamic"], default="static",
                   help="static: interleave once here; dynamic: store words+units, draw per epoch at training time")
    p.add_argument("--compat", choices=["slamkit", "none"], default="slamkit",
                   help="slamkit (default): SlamKit's samplers, unit-span rule and document layout, as the released SIMS "
                        "models were trained on (needs units made with --compat slamkit); none: this project's earlier "
                        "rules (exact-eta spans, frame-centre units). Recorded in the sidecar (docs/data.md)")
    p.add_argument("--allow-mixed-compat", action="store_true",
                   help="interleave units made under the other --compat convention instead of refusing")
    p.add_argument("--method", choices=["poisson", "span", "random"], default="poisson", help="span selection")
    p.add_argument("--mean-span-words", type=float, default=10.0, help="poisson: mean words per speech span (lambda)")
    p.add_argument("--speech-fraction", type=float, default=0.3, help="poisson: target fraction of words in speech (eta)")
    p.add_argument("--span-prob", type=float, default=0.1, help="span: probability that a span starts at a word")
    p.add_argument("--span-words", type=int, default=10, help="span: words per speech span")
    p.add_argument("--word-prob", type=float, default=None,
                   help="random: probability that a word is spoken (default 0.5 with --compat slamkit, as SlamKit; 0.3 with none)")
    p.add_argument("--seed", type=int, default=1234, help="interleaving seed (use train.seed to match dynamic mode at epoch 0)")

    p = sub.add_parser("speech", help="units -> speech-only documents", description="Speech-only documents from a units JSONL.")
    common(p)
    p.add_argument("--units", required=True, help="units JSONL (with its .meta.json identity sidecar)")

    p = sub.add_parser("text", help="text JSONL -> text-only documents", description="Text-only documents from JSONL files.")
    common(p)
    p.add_argument("--input", required=True, nargs="+", help="JSONL file(s) or glob(s), one document per line")
    p.add_argument("--text-key", default="text", help="JSON field holding the document text")
    from megatron_slm.posttrain.cli import add_parsers
    add_parsers(sub, common)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.kind in ("preference", "sft"):
        from megatron_slm.posttrain.cli import main as pairs_main
        return pairs_main(args)
    from megatron_slm.config import InterleaveConfig
    from megatron_slm.data.preprocess import PreprocessError, PreprocessJob, run
    from megatron_slm.data.records import REASONS

    if args.kind == "text":
        inputs = sorted({f for pattern in args.input for f in (glob.glob(pattern) or [pattern])})
    else:
        inputs = [args.units]
    job = PreprocessJob(kind=args.kind, tokenizer=args.tokenizer, out_prefix=args.out_prefix, inputs=inputs,
                        workers=args.workers, strict=args.strict, shard_lines=args.shard_lines, add_bos=args.add_bos,
                        match=args.match, num_units=args.num_units, progress=not args.quiet)
    if args.kind == "interleaved":
        job.alignments, job.alignment_format, job.mode, job.seed = args.alignments, args.alignment_format, args.mode, args.seed
        job.interleave = InterleaveConfig(method=args.method, mean_span_words=args.mean_span_words,
                                          speech_fraction=args.speech_fraction, span_prob=args.span_prob,
                                          span_words=args.span_words, word_prob=args.word_prob, compat=args.compat,
                                          allow_mixed_compat=args.allow_mixed_compat)
    if args.kind == "text":
        job.text_key = args.text_key
    try:
        # <prefix>.meta.json must never replace an input's own sidecar (--out-prefix <units>.jsonl would)
        from megatron_slm.outputs import OutputError, guard_output_file

        reads = [*inputs, *(f"{p}.meta.json" for p in inputs), args.tokenizer, getattr(args, "alignments", None)]
        for suffix in (".bin", ".idx", ".meta.json"):
            guard_output_file(args.out_prefix + suffix, reads, force=True, flag="--out-prefix")
    except OutputError as e:
        error(e)
        return 1
    try:
        meta = run(job)
    except (PreprocessError, OSError) as e:
        error(e)
        return 1
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished shards are kept in {args.out_prefix}.tmp/; "
              "re-run the same command to resume", file=sys.stderr)
        return 130
    tok = meta["tokens"]
    print(f"wrote {args.out_prefix}.bin/.idx/.meta.json: {meta['documents']} documents, {tok['total']} tokens "
          f"(text {tok['text']}, speech {tok['speech']}, other {tok['other']}), "
          f"{meta['audio_hours']:.3f} h of audio, {meta['elapsed_s']:.1f} s")
    skipped = meta["skipped"]
    if skipped["counts"]:
        print(f"skipped {sum(skipped['counts'].values())} records:")
        for reason, n in skipped["counts"].items():
            print(f"  {reason:18s} {n:8d}  ({REASONS.get(reason, reason)})")
        print("first examples:")
        for msg in skipped["examples"]:
            print(f"  {msg}")
    else:
        print("skipped 0 records")
    return 0


if __name__ == "__main__":
    sys.exit(main())
