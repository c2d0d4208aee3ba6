"""Preference pairs from a spoken story corpus's train split (SpokenSwag-style), for
tools/preprocess_data.py preference.

  python tools/make_preference_data.py --stories corpora/stories --units units/stories.jsonl \\
      --out pref/train.jsonl [--prompt speech|text] [--completion speech|text] [--negatives sampled --hf-dir hf/base]

Per train story: prompt = all sentences but the last, chosen = the true last sentence, rejected =
the last sentence of another train story (other-story negatives), or with --negatives sampled a
continuation of the prompt sampled from --hf-dir (on-policy negatives, in the completion's modality). Validation
and test stories are never used. Speech parts are the story's units cut at the last sentence's first
word; the units' identity sidecar is written beside the output. Each pair also carries SlamKit's
transcript fields prompt_text and chosen_text (and rejected_text when the negative is another
story's ending or sampled text), for tools/preprocess_data.py preference --max-auto-bleu. --prompts-out writes the
prompts as segment prompts, to continue them with tools/generate.py or tools/eval_slm.py's
generative tasks (examples/post_training.sh: the test stories' prompts, continued by each model).
"""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stories", required=True, help="a corpus made by tools/make_story_corpus.py")
    ap.add_argument("--units", default=None, help="units JSONL of the corpus's stories (needed for speech parts)")
    ap.add_argument("--out", required=True, help="output JSONL (+ .meta.json with the units' identity)")
    ap.add_argument("--prompt", choices=["speech", "text"], default="speech")
    ap.add_argument("--completion", choices=["speech", "text"], default="speech")
    ap.add_argument("--negatives", choices=["other-story", "sampled"], default="other-story",
                    help="rejected = another train story's ending, or a continuation sampled from --hf-dir")
    ap.add_argument("--hf-dir", default=None, help="sampled negatives: the HF model (with the extended tokenizer)")
    ap.add_argument("--split", choices=["train", "test"], default="train",
                    help="train: training pairs; test: held-out pairs, written only as eval items (--eval-items)")
    ap.add_argument("--eval-items", action="store_true",
                    help="write tools/eval_slm.py items (task pref) instead of training records")
    ap.add_argument("--seed", type=int, default=0, help="which other story gives each negative; the sampling seed")
    ap.add_argument("--prompts-out", default=None, metavar="JSONL",
                    help="also write the pairs' speech prompts (all sentences but the last) as segment prompts, for "
                         "tools/generate.py --prompt-jsonl or a generative task of tools/eval_slm.py (+ .meta.json)")
    args = ap.parse_args(argv)
    from megatron_slm.console import error
    from megatron_slm.posttrain.story_pairs import (StoryPairError, sample_negatives, story_pairs, write_eval_items,
                                                    write_pairs, write_prompts)

    speech = "speech" in (args.prompt, args.completion)
    if speech and not args.units:
        error("--units is needed when the prompt or the completion is speech")
        return 1
    if args.split == "test" and not args.eval_items:
        error("--split test gives held-out pairs for evaluation only: add --eval-items (training pairs come from train)")
        return 1
    if args.eval_items and not (args.prompt == args.completion == "speech"):
        error("--eval-items: speech prompts and completions only")
        return 1
    if (args.negatives == "sampled") != (args.hf_dir is not None):
        error("--negatives sampled and --hf-dir go together")
        return 1
    if args.prompts_out and args.prompt != "speech":
        error("--prompts-out writes speech prompts: use --prompt speech")
        return 1
    try:
        pairs, counts = story_pairs(args.stories, args.units, args.prompt, args.completion, args.seed, args.split)
        if not pairs:
            raise StoryPairError(f"{args.stories}: no pairs ({counts})")
        if args.negatives == "sampled":
            kept = sample_negatives(pairs, args.hf_dir, args.seed)
            print(f"sampled {len(pairs) - kept} negatives from {args.hf_dir}; {kept} samples equal to the true "
                  f"ending (or empty) kept the other story's ending")
        if args.eval_items:
            write_eval_items(pairs, args.out, args.units, "pref")
        else:
            write_pairs(pairs, args.out, args.units if speech else None)
        if args.prompts_out:
            write_prompts(pairs, args.prompts_out, args.units)
            print(f"wrote {args.prompts_out}: {len(pairs)} speech prompts")
    except (StoryPairError, OSError, ValueError) as e:
        error(e)
        return 1
    print(f"wrote {args.out}: {counts['pairs']} {'eval items' if args.eval_items else 'pairs'} ({args.prompt} -> "
          f"{args.completion}) from {counts['stories']} {args.split} stories; skipped {counts['no_units']} without units, "
          f"{counts['too_short']} too short to cut")
    return 0


if __name__ == "__main__":
    sys.exit(main())
