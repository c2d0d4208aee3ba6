"""Align transcripts to their audio word by word: CTC forced alignment with a local CTC model
(a wav2vec2-style `*ForCTC` directory with its tokenizer and feature extractor, e.g.
wav2vec2-base-960h), for corpora that come with text but no word times.

Input (--input): a JSONL of {"id", "audio", "text"} (audio relative to the file), or a Lhotse
CutSet / supervisions manifest / Shar directory (each supervision with a text). Output (--out):
our alignment JSONL (what tools/preprocess_data.py --alignments reads) with a confidence per word,
or a Lhotse CutSet (`.jsonl.gz`, alignment["word"] with score = confidence); Lhotse inputs are
written as Lhotse.

Words the alignment cannot place (no character the model knows, skipped as absent from the
audio, or placed below --min-confidence) are left out and listed with their reason in the
record's "unaligned" field, <out>.unaligned.tsv and the summary, never given invented times.
Files longer than --window-seconds are aligned window by window; shorter ones in batches.
Resumable: re-run the same command and finished utterances are kept.

Examples:
  python tools/align_words.py --input corpus/transcripts.jsonl --model-dir /models/wav2vec2-base-960h \\
      --out corpus/alignments.jsonl
  python tools/align_words.py --input librispeech_supervisions_dev-clean.jsonl.gz \\
      --model-dir /models/wav2vec2-base-960h --out aligned_cuts.jsonl.gz
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from megatron_slm.console import error


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, help="transcripts JSONL, or a Lhotse CutSet / supervisions manifest / Shar dir")
    p.add_argument("--model-dir", required=True, help="local CTC model directory (Wav2Vec2ForCTC + processor)")
    p.add_argument("--out", required=True, help="alignment JSONL, or a Lhotse CutSet .jsonl.gz")
    p.add_argument("--format", choices=("auto", "jsonl", "lhotse"), default="auto",
                   help="output format (default: lhotse for a .jsonl.gz --out, else jsonl)")
    p.add_argument("--window-seconds", type=float, default=30.0, help="longer files are aligned in windows of this length")
    p.add_argument("--margin-seconds", type=float, default=2.0,
                   help="words ending in a window's last seconds are re-aligned in the next window")
    p.add_argument("--skip-penalty", type=float, default=10.0,
                   help="cost (nats) of leaving a word out; lower finds absent words sooner (default 10)")
    p.add_argument("--min-confidence", type=float, default=0.1,
                   help="words placed with a lower confidence (geometric-mean frame probability) are left out")
    p.add_argument("--batch-size", type=int, default=8, help="short files through the model at once")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from tqdm import tqdm

    from megatron_slm.align import aligner as al
    from megatron_slm.corpus import transcripts
    from megatron_slm.align.model import CTCModel
    from megatron_slm.units.sharding import repair_tail
    from megatron_slm.corpus.synth import split_words

    from megatron_slm.outputs import guard_output_file

    t0 = time.time()
    try:
        # resumable, so --out may exist; never on the input (a Lhotse --input's alignments would be replaced)
        for path in (args.out, args.out + ".partial.jsonl", args.out + ".unaligned.tsv"):
            guard_output_file(path, [args.input, args.model_dir], resume=True)
        utts, in_kind = transcripts.read_transcripts(args.input)
        fmt = args.format if args.format != "auto" else ("lhotse" if args.out.endswith(".jsonl.gz") else "jsonl")
        if in_kind == "lhotse" and fmt != "lhotse":
            raise transcripts.CorpusError("a Lhotse input is written as a Lhotse CutSet: give --out X.jsonl.gz")
        import torch

        model = CTCModel.load(args.model_dir, args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        aligner = al.WordAligner(model, args.window_seconds, args.margin_seconds, args.skip_penalty,
                                 args.min_confidence, args.batch_size)
    except (transcripts.CorpusError, ValueError, OSError) as e:
        error(e)
        return 2

    partial = args.out if fmt == "jsonl" else args.out + ".partial.jsonl"
    os.makedirs(os.path.dirname(os.path.abspath(partial)), exist_ok=True)
    repair_tail(partial)
    done = transcripts.read_done(partial)
    todo = [u for u in utts if u.id not in done]
    bad: list[tuple[str, str]] = []
    warned: list[tuple[str, str]] = []  # kept, but worth knowing (silent audio)
    bar = tqdm(total=len(todo), unit="utt", desc="align", disable=args.quiet)
    secs = 0.0
    chunk = max(1, args.batch_size) * 4
    with open(partial, "a", encoding="utf-8") as f:
        for c in range(0, len(todo), chunk):
            batch = []
            for u in todo[c: c + chunk]:
                words = split_words(u.text)
                if not words:
                    bad.append((u.id, "empty transcript"))
                    continue
                wave, problem, warning = read_screened(u, model.sample_rate)
                if problem:
                    bad.append((u.id, problem))
                    continue
                if warning:
                    warned.append((u.id, warning))
                if wave.size < model.sample_rate * model.frame_seconds * 2:
                    bad.append((u.id, "audio too short"))
                    continue
                batch.append((u, wave, words))
            bar.update(len(todo[c: c + chunk]) - len(batch))
            for (u, wave, _), result in zip(batch, aligner.align([(u.id, w, ws) for u, w, ws in batch])):
                rec = transcripts.record(u, result)
                done[u.id] = rec
                f.write(transcripts.dumps(rec) + "\n")
                f.flush()
                secs += result.seconds
                bar.update(1)
    bar.close()

    written = None
    if fmt == "lhotse":
        written = transcripts.write_lhotse(utts, done, args.out)
        os.remove(partial)
    _summary(args, utts, done, bad, secs, time.time() - t0, written, al.REASONS)
    if warned:
        print(f"warnings {len(warned)} (kept):")
        for uid, why in warned[:10]:
            print(f"  {uid}: {why}")
    return 0


def read_screened(u, sample_rate: int):
    """(wave, why it is skipped, what to warn about): the audio screen extraction uses -- regular
    files only (a FIFO would block), a span within its recording, readable, no NaN/Inf, not
    truncated; silence is kept with a warning."""
    import torch

    from megatron_slm.audio.decode_soundfile import load_audio
    from megatron_slm.audio.probe import probe
    from megatron_slm.audio.screen import screen

    items, skipped = probe([u.audio], ids=[u.id])
    if skipped:
        return None, f"audio {skipped[0].reason}", None
    item = items[0]
    try:
        wave = load_audio(item.source if item.source is not None else item.path, sample_rate)
    except Exception as e:  # soundfile/tar/lhotse errors: one file, one line in the summary
        return None, f"audio unreadable: {str(e).splitlines()[0][:200]}", None
    skips, warns = screen(torch.as_tensor(wave)[None], torch.tensor([wave.size]), [item], sample_rate)
    return wave, (f"audio {skips[0]}" if skips[0] else None), warns[0]


def _summary(args, utts, done: dict, bad: list, secs: float, elapsed: float, written, reasons: dict) -> None:
    from collections import Counter

    recs = [done[u.id] for u in utts if u.id in done]
    placed = sum(len(r["words"]) for r in recs)
    why = Counter(x["reason"] for r in recs for x in r.get("unaligned", []))
    total = placed + sum(why.values())
    conf = [w["confidence"] for r in recs for w in r["words"]]
    empty = sum(1 for r in recs if not r["words"])
    with open(args.out + ".unaligned.tsv", "w", encoding="utf-8") as f:
        f.writelines(f"{r['id']}\t{x['index']}\t{x['word']}\t{x['reason']}\n" for r in recs for x in r.get("unaligned", []))
        f.writelines(f"{uid}\t-\t-\t{reason}\n" for uid, reason in bad)
    rate = f", {secs / elapsed:.1f} s audio/s" if elapsed > 0 and secs else ""
    print(f"aligned {len(recs)} of {len(utts)} utterances into {args.out}"
          + (f" ({written} cuts)" if written is not None else "")
          + f": {placed} of {total} words placed"
          + (f", mean confidence {sum(conf) / len(conf):.3f}" if conf else "") + f"; {elapsed:.1f} s{rate}")
    if why:
        print(f"unplaced words ({sum(why.values())}, listed in {args.out}.unaligned.tsv):")
        for reason, n in why.most_common():
            print(f"  {reason:15s} {n:8d}  ({reasons.get(reason, reason)})")
    if empty:
        print(f"utterances with no word placed: {empty}")
    if bad:
        print(f"skipped {len(bad)} utterances:")
        for uid, reason in bad[:10]:
            print(f"  {uid}: {reason}")


if __name__ == "__main__":
    sys.exit(main())
