"""Synthesise a speech corpus with exact word alignments from a text file (espeak-ng).

Input: a UTF-8 text file, one utterance per line (blank lines separate stories, '#' starts a
comment, 'id<TAB>text' names an utterance). Output directory:
  audio/<id>.<fmt>     16 kHz mono audio (FLAC by default)
  alignments.jsonl     {"id", "audio", "text", "words": [{"word", "start", "end"}]}, seconds
Resumable: utterances already in alignments.jsonl whose audio exists are skipped.
Example:
  python tools/synthesize_corpus.py --text examples/data/tiny_corpus/stories.txt --out corpus/
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from megatron_slm.console import error


_SUBTYPE = {"flac": "PCM_16", "wav": "PCM_16", "ogg": "VORBIS"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--text", required=True, help="input text file (one utterance per line)")
    p.add_argument("--out", required=True, help="output corpus directory (created)")
    p.add_argument("--voice", default="en-us", help="espeak-ng voice (see `espeak-ng --voices`); default en-us")
    p.add_argument("--speed", type=int, default=165, help="words per minute for espeak-ng (default 165)")
    p.add_argument("--pitch", type=int, default=50, help="espeak-ng pitch 0-99 (default 50)")
    p.add_argument("--sample-rate", type=int, default=16000, help="output sample rate in Hz (default 16000)")
    p.add_argument("--format", choices=sorted(_SUBTYPE), default="flac", help="audio file format (default flac)")
    p.add_argument("--seed", type=int, default=0, help="seed for the pause lengths between words")
    p.add_argument("--limit", type=int, default=None, help="synthesise only the first N utterances")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import soundfile as sf
    from tqdm import tqdm

    from megatron_slm.corpus.canonical import iter_alignments
    from megatron_slm.corpus.synth import EspeakSynth, PauseConfig, read_utterances, synthesize

    try:
        try:
            utts = read_utterances(args.text)[: args.limit]
        except UnicodeDecodeError as e:
            raise ValueError(f"{args.text}: not UTF-8 text (byte {e.start}: {e.reason}); convert it, e.g. "
                             f"iconv -f latin1 -t utf-8") from None
        if not utts:
            raise ValueError(f"{args.text}: no utterances")
        synth = EspeakSynth(args.voice, args.speed, args.pitch, args.sample_rate)
        out = Path(args.out)
        (out / "audio").mkdir(parents=True, exist_ok=True)
        align_path = out / "alignments.jsonl"
        done: dict[str, dict] = {}
        if align_path.exists():
            done = {r["id"]: r for r in iter_alignments(align_path) if (out / r["audio"]).exists()}
    except (OSError, ValueError, RuntimeError) as e:
        error(e)
        return 2

    failed: list[tuple[str, str]] = []
    seconds = 0.0
    todo = [u for u in utts if u.id not in done]
    with open(align_path, "a", encoding="utf-8") as f:
        for utt in tqdm(todo, desc="synthesising", unit="utt"):
            try:
                audio, words = synthesize(utt, synth, PauseConfig(), args.seed)
            except (RuntimeError, ValueError) as e:
                failed.append((utt.id, str(e)))
                continue
            rel = f"audio/{utt.id}.{args.format}"
            sf.write(out / rel, audio, args.sample_rate, subtype=_SUBTYPE[args.format])
            rec = {"id": utt.id, "audio": rel, "text": utt.text, "words": words}
            f.write(json.dumps(rec) + "\n")
            f.flush()
            done[utt.id] = rec
            seconds += audio.size / args.sample_rate

    # Rewrite in input order so the file is deterministic whatever the resume history.
    order = [u.id for u in utts if u.id in done] + sorted(set(done) - {u.id for u in utts})
    tmp = align_path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(done[i]) + "\n" for i in order), encoding="utf-8")
    os.replace(tmp, align_path)

    print(f"synthesised {len(todo) - len(failed)} utterances ({seconds:.1f} s of audio), "
          f"skipped {len(utts) - len(todo)} already done, failed {len(failed)}; alignments: {align_path}")
    for uid, why in failed:
        print(f"  failed {uid}: {why}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
