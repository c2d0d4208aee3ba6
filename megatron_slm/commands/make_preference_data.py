"""Preference pairs from a spoken story corpus's train split (SpokenSwag-style), for
tools/preprocess_data.py preference.

  python tools/make_preference_data.py --stories corpora/stories --units units/stories.jsonl \\
      --out pref/train.jsonl [--prompt speech|text] [--completion speech|text]

Per train story: prompt = all sentences but the last, chosen = the true last sentence, rejected =
the last sentence of another train story (other-story negatives). Validation and test stories are
never used. Speech parts are the story's units cut at the last sentence's first word; the units'
identity sidecar is written beside the output. Negatives sampled from a model are not built here.
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
    ap.add_argument("--seed", type=int, default=0, help="which other story gives each negative")
    args = ap.parse_args(argv)
    from megatron_slm.console import error
    from megatron_slm.posttrain.story_pairs import StoryPairError, story_pairs, write_pairs

    speech = "speech" in (args.prompt, args.completion)
    if speech and not args.units:
        error("--units is needed when the prompt or the completion is speech")
        return 1
    try:
        pairs, counts = story_pairs(args.stories, args.units, args.prompt, args.completion, args.seed)
        if not pairs:
            raise StoryPairError(f"{args.stories}: no pairs ({counts})")
        write_pairs(pairs, args.out, args.units if speech else None)
    except (StoryPairError, OSError, ValueError) as e:
        error(e)
        return 1
    print(f"wrote {args.out}: {counts['pairs']} pairs ({args.prompt} -> {args.completion}) from "
          f"{counts['stories']} train stories; skipped {counts['no_units']} without units, "
          f"{counts['too_short']} too short to cut")
    return 0


if __name__ == "__main__":
    sys.exit(main())
