"""Score spoken-LM benchmarks (sWUGGY, sBLIMP, sSC, tSC, SALMon, cross-modal StoryCloze, ...)
with a Megatron checkpoint (any TP/PP, data parallel over the remaining ranks) or an HF model.

Each candidate is scored by its log-likelihood after BOS (mean per token by default, --score sum
for the total); an item counts 1 when its positive beats every negative, ties 0.5. Prints a
table with bootstrap 95% CIs and per-part rows; --out writes the JSON report, --item-scores the
per-item log-likelihoods (to compare backends or models item by item).

Examples:
  torchrun --nproc_per_node=4 tools/eval_slm.py --mcore-dir runs/sims-3b --tp 2 --tasks ssc,tsc --data eval/
  python tools/eval_slm.py --hf-dir hf/sims-3b --tasks swuggy,sblimp --data eval/ --out report.json
  python tools/eval_slm.py --hf-dir hf/model --items eval/word_shuffle.jsonl
Benchmarks are made by tools/prepare_eval_data.py; --tasks ssc reads <data>/ssc.jsonl.
Generative tasks (genppl, autobleu, genppl_text, autobleu_text; autobleu_units: a unit-level
Auto-BLEU of the speech continuations, needing no vocoder or ASR) continue the prompts in
<data>/<task>.jsonl and score the continuations (docs/generate.md):
  python tools/eval_slm.py --hf-dir hf/sims-3b --tasks genppl --data eval/ --vocoder /models/hifigan \
      --asr-model /models/whisper-large-v3-turbo --ppl-model /models/Llama-3.2-1B
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from megatron_slm.commands.generate import add_model_args
from megatron_slm.console import error


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.add_argument("--tasks", default=None, help="comma-separated task names, read from <data>/<task>.jsonl")
    p.add_argument("--data", default="eval", help="directory of prepared benchmarks (default eval/)")
    p.add_argument("--items", nargs="+", default=[], help="item files to score (in addition to --tasks)")
    p.add_argument("--score", choices=("mean", "sum"), default="mean", help="log-likelihood per token (default) or total")
    p.add_argument("--restrict", choices=("speech", "text"), default=None,
                   help="softmax over one modality's tokens only (default: the whole vocabulary)")
    p.add_argument("--compat", choices=("slamkit", "none"), default=None,
                   help="scoring convention: slamkit (SlamKit's: --restrict speech keeps BOS and EOS in the softmax, "
                        "--restrict text drops only the units) or none (--restrict speech: units only). Default: "
                        "the convention the benchmarks' units were made with (slamkit when they have none)")
    p.add_argument("--allow-mixed-compat", action="store_true",
                   help="score benchmarks whose units follow another convention than --compat, each other or the "
                        "model's training units, instead of refusing")
    p.add_argument("--prefer", choices=("units", "text"), default="units",
                   help="candidates with both units and a transcript: score the units (default) or the text")
    p.add_argument("--batch-tokens", type=int, default=16384, help="padded tokens per batch (default 16384)")
    p.add_argument("--batch-size", type=int, default=64, help="sequences per batch at most (default 64)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the CIs (default 1000)")
    p.add_argument("--out", default=None, help="write the JSON report here")
    p.add_argument("--item-scores", default=None, help="write per-item scores (JSONL) here")
    p.add_argument("--submission", default=None, metavar="DIR",
                   help="write ZeroSpeech 2021 submission files for the sWUGGY/sBLIMP sets prepared from gold.csv: "
                        "DIR/lexical/<split>.txt, DIR/syntactic/<split>.txt ('<filename> <score>'), DIR/meta.yaml")
    p.add_argument("--force", action="store_true",
                   help="replace --out / --item-scores / --submission when they exist (a --submission directory only "
                        "when a megatron-slm tool wrote it)")
    from megatron_slm.commands.generate import add_generative_eval_args

    add_generative_eval_args(p)
    args = p.parse_args(argv)
    if not args.tasks and not args.items:
        p.error("give --tasks (with --data) and/or --items")
    return args


def check_outputs(args: argparse.Namespace) -> None:
    """Before any scoring: no output on top of an input (items, benchmarks, model, tokenizer), over
    another output, or over an existing file without --force."""
    from megatron_slm import outputs

    inputs = [args.mcore_dir, args.hf_dir, args.tokenizer, args.units_meta, args.asr_model, args.ppl_model,
              args.vocoder, args.alignments, *args.items, *([args.data] if args.tasks else [])]
    outputs.guard_distinct({"--out": args.out, "--item-scores": args.item_scores, "--submission": args.submission})
    for flag in ("--out", "--item-scores"):
        if getattr(args, flag[2:].replace("-", "_")):
            outputs.guard_output_file(getattr(args, flag[2:].replace("-", "_")), inputs, force=args.force, flag=flag)
    if args.submission:
        outputs.guard_output_dir(args.submission, inputs, force=args.force)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from megatron_slm.eval import run
    from megatron_slm.eval.benchmarks import zerospeech
    from megatron_slm.eval.items import ItemError
    from megatron_slm.eval.report import summarize, table, write_item_scores, write_report
    from megatron_slm.outputs import mark
    from megatron_slm.eval.generative import is_generative_task
    from megatron_slm.vocab import SpeechVocab, VocabError, tokenizer_unit_count

    model_dir = args.mcore_dir or args.hf_dir
    rank0 = int(os.environ.get("RANK", "0")) == 0
    t0 = time.time()
    try:
        if not os.path.isdir(model_dir):
            raise ItemError(f"{model_dir}: model directory not found")
        check_outputs(args)
        tok_dir = args.tokenizer or (os.path.join(args.mcore_dir, "tokenizer") if args.mcore_dir else args.hf_dir)
        vocab = SpeechVocab.from_pretrained(tok_dir, args.num_units or tokenizer_unit_count(tok_dir))
        tasks = [t.strip() for t in (args.tasks or "").split(",") if t.strip()]
        gen_tasks = [t for t in tasks if is_generative_task(t)]
        sets = run.load_sets(run.benchmark_files(args.data, [t for t in tasks if t not in gen_tasks], args.items))
        identity = run.expected_unit_identity(model_dir, tok_dir, units_meta=args.units_meta)
        args.compat = run.resolve_compat(sets, args.compat, args.allow_mixed_compat)
        units_checked = run.check_sets(sets, identity, vocab, model=model_dir, compare_compat=not args.allow_mixed_compat)
        backend = _backend(args, vocab, progress=rank0)
        all_scores = run.score_sets(sets, vocab, backend, reduce=args.score, prefer=args.prefer)
        gen_summary, gen_rows = _generative(args, gen_tasks, backend, vocab, identity, rank0)
    except (ItemError, VocabError, ValueError, FileNotFoundError) as e:
        error(e)
        return 1
    rc = 0
    if rank0:
        summary = summarize(all_scores, n_boot=args.bootstrap)
        zerospeech.add_to_summary(summary, sets, all_scores)  # official ZR2021 scores next to per-pair ones
        summary.update(gen_summary)
        settings = {"model": os.path.abspath(model_dir), "backend": "megatron" if args.mcore_dir else "hf",
                    "unit_identity_checked": units_checked,
                    "score": args.score, "restrict": args.restrict, "compat": args.compat, "prefer": args.prefer,
                    "tp": args.tp, "pp": args.pp, "iteration": args.iteration}
        print(table(summary))
        if args.out:
            write_report(args.out, summary, settings)
        if args.item_scores:
            write_item_scores(args.item_scores, all_scores, extra_rows=gen_rows)
        if args.submission:
            try:
                files = zerospeech.write_submission(args.submission, sets, all_scores,
                                                    f"megatron-slm eval_slm: {settings['model']} (score {args.score})")
                mark(args.submission, "eval_slm --submission")
                print(f"ZeroSpeech 2021 submission: {', '.join(files)}"
                      + (" (complete meta.yaml before submitting)" if any(f.endswith("meta.yaml") for f in files) else ""))
            except ValueError as e:
                error(e)
                rc = 1
        print(f"scored {len(all_scores)} items from {len(sets)} file(s)"
              + (f" and {len(gen_rows)} continuations of {len(gen_tasks)} generative task(s)" if gen_tasks else "")
              + f" in {time.time() - t0:.1f} s"
              + (f"; report: {args.out}" if args.out else ""))
    if args.mcore_dir:
        from megatron_slm.runtime.distributed import destroy_distributed

        destroy_distributed()
    return rc


def _generative(args: argparse.Namespace, tasks: list[str], backend, vocab, identity, progress: bool):
    """GenPPL / Auto-BLEU tasks on the same model (megatron_slm.eval.generative)."""
    if not tasks:
        return {}, []
    from megatron_slm.commands.generate import generative_settings, sampling_config
    from megatron_slm.eval.generative import evaluate_generative

    info = {"backend": "megatron" if args.mcore_dir else "hf", "dir": os.path.abspath(args.mcore_dir or args.hf_dir),
            "vocab": vocab.identity()}
    return evaluate_generative(tasks, args.data, backend, vocab, sampling_config(args), generative_settings(args),
                               info, identity, mcore_dir=args.mcore_dir, batch_size=args.gen_batch_size,
                               n_boot=args.bootstrap, progress=progress)


def _backend(args: argparse.Namespace, vocab, progress: bool):
    """The model to score with: Megatron at --tp/--pp (data parallel over the other ranks) or HF."""
    from megatron_slm.eval.likelihood import HFBackend, MegatronBackend

    kw = dict(restrict=args.restrict, max_tokens=args.batch_tokens, max_batch=args.batch_size, progress=progress,
              compat=args.compat)
    if args.mcore_dir:
        from megatron_slm.checkpoint.inference import load_for_inference

        loaded = load_for_inference(args.mcore_dir, args.tp, args.pp, args.iteration, args.dtype)
        return MegatronBackend(loaded.models, vocab, loaded.padded_vocab_size, **kw)
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    from megatron_slm.commands.generate import model_load_errors
    from megatron_slm.eval.items import ItemError

    with model_load_errors(args.hf_dir, ItemError):
        return HFBackend.from_pretrained(args.hf_dir, vocab, device=device,
                                         dtype=args.dtype or ("bf16" if device.startswith("cuda") else "fp32"), **kw)


if __name__ == "__main__":
    sys.exit(main())
