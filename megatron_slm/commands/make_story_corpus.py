"""Make a synthetic spoken story corpus offline and deterministically (espeak-ng, exact word alignments).

Simple English stories from the grammar in megatron_slm/corpus/stories.py (fixed lexicon, five
plots, consistent characters), spoken with espeak-ng (three rate/pitch variants), split into
train / valid / test by story, plus a StoryCloze folder built from the test stories (the true
ending vs the ending of another story) and text-only stories for pre-training a text LM.

Output (see docs/data.md): manifest.json, stories.jsonl, alignments.jsonl (train, valid, test in
that order: data.split=<manifest data_split>), alignments.<split>.jsonl, audio/, ssc/,
text_stories.jsonl. A second run with the same parameters finds the manifest and returns at once
(--verify re-hashes every file first).

Examples:
  python tools/make_story_corpus.py --out corpora/stories              # 3 h, seed 0
  python tools/make_story_corpus.py --out demo_out/stories --hours 0.25 --text-stories 2000
"""
from __future__ import annotations

import argparse
import sys

from megatron_slm.console import error


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="corpus directory (created; reused when its manifest matches)")
    p.add_argument("--hours", type=float, default=3.0, help="hours of speech over all splits (default 3)")
    p.add_argument("--seed", type=int, default=0, help="story stream, splits, voices and pauses (default 0)")
    p.add_argument("--valid-fraction", type=float, default=0.06, help="share of stories held out for validation")
    p.add_argument("--test-fraction", type=float, default=0.15, help="share of stories held out for benchmarks")
    p.add_argument("--text-stories", type=int, default=20000,
                   help="text-only stories for text-LM pre-training (default 20000; none equals a held-out story)")
    p.add_argument("--voices", type=int, default=3, choices=(1, 2, 3),
                   help="espeak-ng rate/pitch variants, one drawn per story (default 3; 1 synthesises a third as much)")
    p.add_argument("--verify", action="store_true", help="re-hash every file of a cached corpus before reusing it")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from megatron_slm.corpus.story_corpus import DEFAULT_VOICES, CorpusSpec, build_corpus

    spec = CorpusSpec(hours=args.hours, seed=args.seed, valid_fraction=args.valid_fraction,
                      test_fraction=args.test_fraction, text_stories=args.text_stories,
                      voices=DEFAULT_VOICES[: args.voices])
    from megatron_slm.outputs import guard_reused_dir

    try:
        guard_reused_dir(args.out, "make_story_corpus", own_file="manifest.json")  # not into others' files
        m = build_corpus(args.out, spec, progress=not args.quiet, verify=args.verify)
    except (OSError, ValueError, RuntimeError) as e:
        error(e)
        return 2
    how = "cached (manifest matches)" if m["cached"] else f"built in {m['build_seconds']:.0f} s"
    hours = {s: m["seconds"][s] / 3600 for s in m["seconds"]}
    print(f"{args.out}: {how}; stories train/valid/test {m['data_split'].replace(',', '/')} "
          f"({hours['train']:.2f}/{hours['valid']:.2f}/{hours['test']:.2f} h), "
          f"{m['storycloze_items']} StoryCloze pairs, {m['text_stories']} text-only stories; "
          f"data.split={m['data_split']}; content sha256 {m['content_sha256'][:16]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
