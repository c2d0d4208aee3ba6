"""Argument groups and input resolution shared by the unit commands: extract_units and train_kmeans
(input audio, features), prepare_eval_data and generate (features, --trust-pickle). Not a command itself."""
from __future__ import annotations

import argparse
import os

from megatron_slm import conventions


def add_input_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("input audio (one of)")
    src = g.add_mutually_exclusive_group(required=True)
    src.add_argument("--audio-dir", help="directory searched recursively for .wav/.flac/.ogg/.opus/.mp3 files")
    src.add_argument("--file-list", help="text file with one audio path per line (relative to the list's folder; "
                                         "the same extensions)")
    src.add_argument("--alignments", help="a corpus alignments.jsonl (its ids and 'audio' paths), or a Lhotse "
                                           "CutSet / supervisions manifest / Shar directory (cut ids; only each "
                                           "cut's span of its recording is decoded)")
    g.add_argument("--alignment-format", choices=("auto", "jsonl", "lhotse"), default="auto",
                   help="format of --alignments (default: detected)")
    g.add_argument("--ids", choices=("stem", "relpath"), default="stem",
                   help="utterance id of a file from --audio-dir/--file-list: file name without extension "
                        "(default) or path relative to the input root without extension")
    g.add_argument("--min-seconds", type=float, default=0.1, help="skip files shorter than this (default 0.1)")
    g.add_argument("--max-seconds", type=float, default=None, help="skip files longer than this")


def add_extractor_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("features")
    g.add_argument("--extractor", choices=("hubert", "mel"), default="mel",
                   help="hubert: HubertModel hidden layer (needs --model-dir); mel: log-mel frames, no weights (default)")
    g.add_argument("--model-dir", help="local HuggingFace HubertModel directory (e.g. mhubert-base-25hz), or a "
                                       "MimiModel directory with --tokenizer mimi")
    g.add_argument("--layer", type=int, default=11, help="HuBERT hidden layer, 1-based (default 11)")
    g.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda:LOCAL_RANK if available, else cpu)")
    g.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"), default="auto",
                   help="HuBERT compute precision; auto = bfloat16 where the device has native bf16 (CUDA, "
                        "CPUs with AVX512-BF16/AMX), else float32. Recorded in the sidecar")
    g.add_argument("--audio-backend", choices=("auto", "dali", "soundfile"), default="auto",
                   help="decoder: DALI (GPU resampling on CUDA) or soundfile+scipy; auto = DALI when installed")
    g.add_argument("--max-batch-seconds", type=float, default=None,
                   help="padded seconds of audio per batch (length-bucketed; default 120 on GPU, "
                        "one utterance per batch on CPU, where padding only adds work)")
    g.add_argument("--num-threads", type=int, default=2, help="DALI decoding threads (default 2)")
    g.add_argument("--compat", choices=conventions.CHOICES, default=conventions.DEFAULT,
                   help="slamkit (default): HuBERT input padded with 40 zero samples each side, as SlamKit and the "
                        "released SIMS models; none: unpadded (units made before this option). Recorded in the "
                        "sidecar: units of the two conventions never mix")
    g.add_argument("--streams", type=int, default=None,
                   help="utterances computed at once, each on its own thread (default: CPU min(torch threads, 4), "
                        "GPU 1)")


def add_tokenizer_args(g) -> None:
    """--tokenizer and --num-codebooks: which speech tokenizer makes the units (units/tokenizers.py)."""
    g.add_argument("--tokenizer", choices=("hubert", "mel", "mimi"), default=None,
                   help="hubert/mel: --extractor features + --kmeans (default: the --extractor); mimi: the Mimi "
                        "codec in --model-dir (a local HF MimiModel directory), no k-means")
    g.add_argument("--num-codebooks", type=int, default=None,
                   help="mimi: keep its first N codebooks (the first is semantic), N tokens per 12.5 Hz frame")


def add_trust_pickle_arg(g) -> None:
    """--trust-pickle, next to every --kmeans: a pickled k-means runs code when loaded (docs/trust.md)."""
    g.add_argument("--trust-pickle", action="store_true",
                   help="allow a pickled k-means (.bin/.pkl, e.g. TWIST km500): unpickling runs any code the file "
                        "holds, so only for files you trust; better, convert it once with tools/convert_kmeans.py")


def resolve_inputs(args: argparse.Namespace, skipped: list | None = None) -> tuple[list, list[str]]:
    """(audio inputs, ids) from --audio-dir / --file-list / --alignments; ids must be unique. An
    input is a file path or, for Lhotse cuts, an `AudioSource` (a span, a Shar tar member).
    --audio-dir and --file-list follow one rule: audio files are the regular files with one of
    AUDIO_EXTENSIONS; entries left out by it are appended to `skipped` (`Skipped`) when given."""
    from megatron_slm.audio.skips import Skipped
    from megatron_slm.audio.sources import AUDIO_EXTENSIONS, is_audio_name, list_audio_files, utterance_id

    skipped = [] if skipped is None else skipped
    if args.alignments:
        from megatron_slm.corpus import lhotse_manifests
        from megatron_slm.corpus.canonical import audio_entries

        fmt = getattr(args, "alignment_format", "auto")
        if fmt == "lhotse" or (fmt == "auto" and lhotse_manifests.detect(args.alignments)):
            paths, ids = lhotse_manifests.audio_inputs(args.alignments)
        else:  # ids are unique here: audio_entries names both lines of a repeated one
            root = os.path.dirname(os.path.abspath(args.alignments))
            entries = audio_entries(args.alignments)
            paths = [os.path.join(root, audio) for _, audio, _ in entries]
            ids = [uid for uid, _, _ in entries]
        hint = ""
    else:
        if args.audio_dir:
            if not os.path.isdir(args.audio_dir):
                raise FileNotFoundError(f"--audio-dir {args.audio_dir!r} is not a directory")
            root, paths = args.audio_dir, list_audio_files(args.audio_dir, skipped=skipped)
        else:
            root = os.path.dirname(os.path.abspath(args.file_list))
            with open(args.file_list, encoding="utf-8") as f:
                listed = [os.path.join(root, line.strip()) for line in f if line.strip()]
            paths = [p for p in listed if is_audio_name(p)]
            skipped += [Skipped(p, f"not an audio file name (the extension is none of {', '.join(AUDIO_EXTENSIONS)})")
                        for p in listed if not is_audio_name(p)]
        ids = [utterance_id(p, root if args.ids == "relpath" else None) for p in paths]
        hint = "; use --ids relpath"
    if not paths:
        raise ValueError("no audio files found in the input"
                         + (f" ({len(skipped)} left out, e.g. {skipped[0].path}: {skipped[0].reason})" if skipped else ""))
    seen: dict[str, str] = {}
    for p, i in zip(paths, ids):
        p = getattr(p, "path", p)
        if i in seen:
            raise ValueError(f"duplicate utterance id {i!r} ({seen[i]} and {p}){hint}")
        seen[i] = p
    return paths, ids
