"""The `preference` and `sft` subcommands of tools/preprocess_data.py (argument parsing stays light:
the heavy imports happen when a subcommand runs)."""
from __future__ import annotations


def add_parsers(sub, common) -> None:
    """The `preference` and `sft` subcommands of tools/preprocess_data.py."""
    for kind, text in (("preference", "prompt/chosen/rejected records (ours or SlamKit's features) -> DPO pairs"),
                       ("sft", "prompt/response records -> SFT examples (loss on the response)")):
        p = sub.add_parser(kind, help=text, description=text + ". Parts are text, {\"units\": [...]} or a list "
                           "of such segments; layout BOS + prompt, each completion + EOS; over-long records are "
                           "truncated as TRL does (prompt from the left, completions from the right) and counted.")
        common(p)
        p.add_argument("--input", required=True, nargs="+", help="JSONL file(s), one record per line")
        p.add_argument("--max-length", type=int, default=2048, help="tokens of prompt + completion (use train.seq_length)")
        p.add_argument("--max-prompt-length", type=int, default=None, help="prompt tokens kept when truncating "
                       "(default: half of --max-length)")
        p.add_argument("--units-meta", default=None, metavar="UNITS_JSONL",
                       help="the units JSONL (with its .meta.json) the records' units came from; default: "
                            "<input>.meta.json")
        if kind == "preference":
            f = p.add_argument_group("repetition filter (SlamKit's DPO data: repetition_filter, max_auto_bleu 0.3, "
                                     "auto_bleu_n 2)")
            f.add_argument("--max-auto-bleu", type=float, default=None, metavar="X",
                           help="keep a pair only if the Auto-BLEU of its prompt + chosen text is < X (strictly, as "
                                "SlamKit). The text is the record's prompt_text + ' ' + chosen_text (SlamKit's "
                                "transcript fields; tools/make_preference_data.py writes them), else the text "
                                "segments of prompt and chosen. A record without text cannot be checked and is "
                                "skipped (no_text); inputs where no record has text are refused. Dropped pairs are "
                                "counted as 'repetitive' in the summary and the sidecar. Default: no filter")
            f.add_argument("--auto-bleu-n", type=int, default=2, metavar="N",
                           help="n-gram order of the Auto-BLEU (default 2, SlamKit's)")
            f.add_argument("--word-tokenizer", choices=("auto", "nltk", "regex"), default="auto",
                           help="words of the Auto-BLEU: NLTK's word tokenizer (SlamKit's, a dependency), the regex of "
                                "eval/generative.py, or auto (NLTK where installed); the sidecar records which")


def main(args) -> int:
    from megatron_slm.console import error
    from megatron_slm.data.preprocess import PreprocessError
    from megatron_slm.posttrain import records
    from megatron_slm.posttrain.preprocess import PairJob, run
    from megatron_slm.posttrain.storage import ROLES_SUFFIX

    if not args.add_bos:
        error("--no-bos: preference and SFT rows start with BOS (the prompt's context); drop the flag")
        return 1
    job = PairJob(kind=args.kind, tokenizer=args.tokenizer, inputs=list(args.input), out_prefix=args.out_prefix,
                  max_length=args.max_length, max_prompt_length=args.max_prompt_length, units_meta=args.units_meta,
                  num_units=args.num_units, match=args.match, strict=args.strict, progress=not args.quiet,
                  max_auto_bleu=getattr(args, "max_auto_bleu", None), auto_bleu_n=getattr(args, "auto_bleu_n", 2),
                  word_tokenizer=getattr(args, "word_tokenizer", "auto"))
    try:
        meta = run(job)
    except (PreprocessError, OSError) as e:
        error(e)
        return 1
    t, tok = meta["truncated"], meta["tokens"]
    print(f"wrote {job.out_prefix}.bin/.idx, {job.out_prefix}{ROLES_SUFFIX}.bin/.idx, .meta.json: {meta['documents']} "
          f"{'pairs' if job.kind == 'preference' else 'examples'}, {tok['prompt']} prompt + {tok['completions']} "
          f"completion tokens, {meta['elapsed_s']:.1f} s")
    print(f"truncated {t['pairs']} records to --max-length {meta['max_length']} ({t['prompts']} prompts from the "
          f"left, {t['completions']} with completions cut from the right)")
    rep = meta.get("repetition_filter")
    if rep:
        print(f"repetition filter: kept pairs with Auto-BLEU{rep['auto_bleu_n']} < {rep['max_auto_bleu']:g} "
              f"({rep['word_tokenizer']} words): {rep['dropped']} of {rep['measured']} measured dropped"
              + (f", mean {rep['mean_auto_bleu']:.3f}" if rep["mean_auto_bleu"] is not None else ""))
    skipped = meta["skipped"]
    print(f"skipped {sum(skipped['counts'].values())} records" + (":" if skipped["counts"] else ""))
    for reason, n in skipped["counts"].items():
        print(f"  {reason:18s} {n:8d}  ({records.REASONS.get(reason, reason)})")
    for msg in skipped["examples"]:
        print(f"  e.g. {msg}")
    return 0
