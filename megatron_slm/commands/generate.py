"""Generate speech or text continuations from an HF model or a Megatron checkpoint (any TP/PP).

Prompts: audio (--prompt-audio, units made by the unit pipeline), a units JSONL (--prompt-units),
text lines (--prompt-text), or interleaved segment prompts (--prompt-jsonl). --prompt-seconds cuts
speech prompts at the word end closest to N seconds when --alignments are given (else exactly).
The output modality is enforced: speech output draws only unit ids, text output only text ids
(a model that switches modality stops there). Writes one JSONL row per prompt (--out), and with
--vocoder a WAV per speech continuation (--wav-dir).

Sampling defaults are SlamKit's (temperature 0.8, top-k 25, 150 new tokens); --preset spiritlm
gives SpiritLM's (temperature 0.9, top-p 0.95, 200 tokens); explicit flags override a preset.

Examples:
  python tools/generate.py --hf-dir hf/sims-3b --prompt-audio prompts/ --prompt-seconds 3 --output-modality speech \\
      --vocoder /models/hifigan_mhubert_25hz --out gen/speech.jsonl --wav-dir gen/wav
  python tools/generate.py --hf-dir hf/sims-3b --prompt-units units/eval.jsonl --output-modality text --out gen/s2t.jsonl
  python tools/generate.py --hf-dir hf/sims-3b --prompt-text stories.txt --output-modality speech --out gen/t2s.jsonl
  torchrun --nproc_per_node=4 tools/generate.py --mcore-dir runs/sims-7b --tp 2 --pp 2 \\
      --prompt-units units/eval.jsonl --greedy --max-new-tokens 100 --out gen/greedy.jsonl
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import time

from megatron_slm.console import error
from megatron_slm.outputs import guard_output_file, guard_reused_dir, output_name
from megatron_slm.commands.unit_args import add_trust_pickle_arg

OUTPUTS = ("speech", "text", "any")


def add_sampling_args(p: argparse.ArgumentParser, batch: bool = True) -> None:
    g = p.add_argument_group("decoding")
    g.add_argument("--preset", choices=("slamkit", "spiritlm"), default="slamkit",
                   help="sampling defaults: slamkit (T=0.8, top-k 25, 150 tokens; default) or spiritlm "
                        "(T=0.9, top-p 0.95, 200 tokens)")
    g.add_argument("--temperature", type=float, default=None, help="softmax temperature (preset's by default)")
    g.add_argument("--top-k", type=int, default=None, help="keep the k most likely ids (0 = off)")
    g.add_argument("--top-p", type=float, default=None, help="nucleus sampling mass (1.0 = off)")
    g.add_argument("--repetition-penalty", type=float, default=None, help="> 1 discourages ids already in the "
                                                                          "sequence (HF's rule; default 1.0 = off)")
    g.add_argument("--max-new-tokens", type=int, default=None, help="tokens to generate at most (preset's by default)")
    g.add_argument("--greedy", action="store_true", help="argmax decoding (deterministic)")
    g.add_argument("--seed", type=int, default=0, help="sampling seed; each prompt draws from a generator seeded "
                                                       "by (seed, prompt id), so batching never changes a sample")
    g.add_argument("--no-stop-at-switch", action="store_true",
                   help="mask the other modality's marker too, instead of stopping when the model emits it")
    if batch:
        g.add_argument("--batch-size", type=int, default=16, help="prompts per batch (default 16)")


def add_generative_eval_args(p: argparse.ArgumentParser) -> None:
    """The options of tools/eval_slm.py's generative tasks (genppl, autobleu, genppl_text, autobleu_text,
    autobleu_units)."""
    g = p.add_argument_group("generative tasks (genppl, autobleu, genppl_text, autobleu_text, autobleu_units; "
                             "docs/generate.md)")
    g.add_argument("--asr-model", default=None, help="local Whisper directory that transcribes speech continuations")
    g.add_argument("--ppl-model", default=None, help="local causal text LM directory for GenPPL (SlamKit: Llama-3.2-1B)")
    g.add_argument("--vocoder", default=None, help="unit HiFi-GAN directory, a Mimi model directory (Mimi units), or a "
                                                   "units JSONL of log-mel units (Griffin-Lim)")
    g.add_argument("--prompt-seconds", type=float, default=3.0, help="speech prompts: first N seconds (default 3, SlamKit's)")
    g.add_argument("--alignments", default=None, help="word alignments, to cut speech prompts at a word end")
    g.add_argument("--asr-language", default="en", help="Whisper language (multilingual checkpoints; default en)")
    g.add_argument("--gen-batch-size", type=int, default=16, help="prompts per generation batch (default 16)")
    g.add_argument("--gen-limit", type=int, default=None, help="only the first N prompts of each generative task")
    g.add_argument("--word-tokenizer", choices=("auto", "nltk", "regex"), default="auto",
                   help="Auto-BLEU words: NLTK's tokenizer when installed (auto), or the regex")
    add_sampling_args(p, batch=False)


def generative_settings(args):
    from megatron_slm.eval.generative import GenerativeSettings

    return GenerativeSettings(asr_model=args.asr_model, ppl_model=args.ppl_model, vocoder=args.vocoder,
                              prompt_seconds=args.prompt_seconds, alignments=args.alignments,
                              asr_language=args.asr_language, word_tokenizer=args.word_tokenizer,
                              limit=args.gen_limit)


def add_model_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    m = p.add_mutually_exclusive_group(required=required)
    m.add_argument("--mcore-dir", help="megatron-slm run or converted checkpoint dir (has slm_model.json)")
    m.add_argument("--hf-dir", help="HF model dir (e.g. exported by tools/convert_checkpoint.py mcore-to-hf)")
    p.add_argument("--tokenizer", default=None, help="extended tokenizer dir (default: <mcore-dir>/tokenizer or the HF dir)")
    p.add_argument("--num-units", type=int, default=None, help="speech units in the vocabulary (default: counted "
                                                               "from the tokenizer's <Un k> tokens)")
    p.add_argument("--units-meta", default=None, help="units sidecar (.meta.json) of the model's training units, "
                                                      "to check benchmark/prompt units and the vocoder against "
                                                      "(default: what the model directory records, if anything)")
    p.add_argument("--tp", type=int, default=1, help="Megatron: tensor parallel size")
    p.add_argument("--pp", type=int, default=1, help="Megatron: pipeline parallel size")
    p.add_argument("--iteration", type=int, default=None, help="Megatron: checkpoint iteration (default latest)")
    p.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default=None,
                   help="model dtype (default fp32 on CPU, bf16 on GPU)")
    p.add_argument("--device", default=None, help="HF: cpu or cuda (default cuda when available)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    src = p.add_argument_group("prompts").add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt-audio", nargs="+", help="audio files and/or directories (.wav, .flac, .ogg)")
    src.add_argument("--prompt-units", help="units JSONL of tools/extract_units.py (with its .meta.json sidecar)")
    src.add_argument("--prompt-text", help="text file: one prompt per non-blank line")
    src.add_argument("--prompt-jsonl", help='interleaved prompts: {"id": ..., "segments": [{"text": ...}, {"units": [...]}]}')
    g = p.add_argument_group("prompt options")
    g.add_argument("--prompt-seconds", type=float, default=None, help="keep the first N seconds of speech prompts")
    g.add_argument("--alignments", default=None, help="word alignments (JSONL, TextGrid or Whisper dir) to cut "
                                                      "speech prompts at a word end")
    g.add_argument("--ids", default=None, help="comma-separated prompt ids to generate for (in this order)")
    g.add_argument("--limit", type=int, default=None, help="only the first N prompts")
    g.add_argument("--extractor", choices=("mel", "hubert"), default="mel", help="audio prompts: feature extractor")
    g.add_argument("--kmeans", default=None, help="audio prompts: k-means centroids (.npy, or a pickled sklearn "
                                                  "KMeans with --trust-pickle)")
    add_trust_pickle_arg(g)
    g.add_argument("--compat", choices=("slamkit", "none"), default="slamkit",
                   help="audio prompts: the units convention (slamkit pads the HuBERT input as SlamKit does); it must "
                        "be the model's, which the unit identity check enforces")
    g.add_argument("--extractor-model-dir", default=None, help="audio prompts: HuBERT model dir (--extractor hubert)")
    g.add_argument("--layer", type=int, default=11, help="audio prompts: HuBERT layer (default 11)")
    p.add_argument("--output-modality", default="speech", help="speech (default), text, or any (no modality mask)")
    add_sampling_args(p)
    o = p.add_argument_group("output")
    o.add_argument("--out", required=True, help="output JSONL (one row per prompt)")
    o.add_argument("--resume", action="store_true", help="keep the rows already in --out and generate the rest")
    o.add_argument("--force", action="store_true", help="replace --out if it exists")
    o.add_argument("--vocoder", default=None, help="unit HiFi-GAN directory, a Mimi model directory (Mimi units), or "
                                                   "a units JSONL of log-mel units (Griffin-Lim); writes a WAV per "
                                                   "speech continuation")
    o.add_argument("--wav-dir", default=None, help="where the WAVs go (default: <out>_wav/)")
    o.add_argument("--wav-with-prompt", action="store_true", help="WAVs hold the speech prompt, then the continuation")
    o.add_argument("--speaker", default=None, help="multi-speaker HiFi-GAN: speaker index or name")
    o.add_argument("--show", type=int, default=0, help="print the first N continuations (text, units, WAV path)")
    args = p.parse_args(argv)
    if args.output_modality not in OUTPUTS:  # checked here for one message naming the choices
        p.error(f"--output-modality {args.output_modality!r}: unknown modality (choose {', '.join(OUTPUTS)})")
    if args.resume and args.force:
        p.error("--resume keeps --out, --force replaces it: choose one")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from megatron_slm.config import ConfigError
    from megatron_slm.eval.items import ItemError
    from megatron_slm.generate.sampling import GenerationError
    from megatron_slm.vocab import VocabError

    try:
        return _run(args)
    except (GenerationError, VocabError, ConfigError, ItemError, ValueError, FileNotFoundError) as e:
        error(e)
        return 1
    finally:
        if args.mcore_dir:
            from megatron_slm.runtime.distributed import destroy_distributed

            destroy_distributed()


def build_vocab(args):
    from megatron_slm.vocab import SpeechVocab, tokenizer_unit_count

    model_dir = args.mcore_dir or args.hf_dir
    if not os.path.isdir(model_dir):
        from megatron_slm.generate.sampling import GenerationError

        raise GenerationError(f"{model_dir}: model directory not found")
    tok_dir = args.tokenizer or (os.path.join(args.mcore_dir, "tokenizer") if args.mcore_dir else args.hf_dir)
    return SpeechVocab.from_pretrained(tok_dir, args.num_units or tokenizer_unit_count(tok_dir)), tok_dir


def build_source(args, vocab):
    """(logits source, model identity for the output rows)."""
    from megatron_slm.generate.backends import HFSource, load_megatron_source

    if args.mcore_dir:
        from megatron_slm.checkpoint.layout import latest_iteration

        src = load_megatron_source(args.mcore_dir, vocab, args.tp, args.pp, args.iteration, args.dtype)
        it = args.iteration if args.iteration is not None else latest_iteration(args.mcore_dir)
        info = {"backend": "megatron", "dir": os.path.abspath(args.mcore_dir), "iteration": it,
                "tp": args.tp, "pp": args.pp}
    else:
        from megatron_slm.generate.sampling import GenerationError

        with model_load_errors(args.hf_dir, GenerationError):
            src = HFSource.from_pretrained(args.hf_dir, vocab, device=args.device, dtype=args.dtype)
        info = {"backend": "hf", "dir": os.path.abspath(args.hf_dir)}
    return src, {**info, "vocab": vocab.identity()}


@contextlib.contextmanager
def model_load_errors(model_dir: str, error: type[Exception]):
    """A model directory whose weights cannot be read (a truncated model.safetensors, a missing
    shard) is one line naming the directory, not the loader's traceback."""
    try:
        yield
    except error:
        raise
    except (OSError, RuntimeError, ValueError, KeyError) as e:
        raise error(f"{model_dir}: the model cannot be loaded ({type(e).__name__}: "
                    f"{str(e).splitlines()[0][:300] if str(e) else 'no detail'})") from None
    except Exception as e:  # safetensors' SafetensorError derives from Exception only
        if type(e).__name__ != "SafetensorError":
            raise
        raise error(f"{model_dir}: the model weights are unreadable ({str(e).splitlines()[0][:300]}); "
                    f"is model.safetensors complete?") from None


def sampling_config(args):
    from megatron_slm.generate.sampling import SamplingConfig

    return SamplingConfig.preset(args.preset, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                                 repetition_penalty=args.repetition_penalty, max_new_tokens=args.max_new_tokens,
                                 greedy=args.greedy, seed=args.seed)


def read_prompts(args, vocab):
    from megatron_slm.generate import prompts as P

    alignments = None
    if args.alignments:
        from megatron_slm.corpus.alignments import AlignmentIndex
        from megatron_slm.corpus.words import AlignmentError

        try:
            alignments = AlignmentIndex(args.alignments)
        except AlignmentError as e:
            raise P.GenerationError(str(e)) from None
    if args.prompt_seconds is not None and not args.prompt_seconds > 0:
        raise P.GenerationError(f"--prompt-seconds must be > 0 (got {args.prompt_seconds})")
    if args.prompt_audio:
        from megatron_slm.units.pipeline import UnitExtractor

        ex = UnitExtractor.from_args(extractor=args.extractor, kmeans=args.kmeans, model_dir=args.extractor_model_dir,
                                     layer=args.layer, compat=args.compat, trust_pickle=args.trust_pickle)
        ps = P.read_audio_prompts(args.prompt_audio, ex, args.prompt_seconds, alignments)
    elif args.prompt_units:
        ps = P.read_prompt_file(args.prompt_units, args.prompt_seconds, alignments)
    elif args.prompt_jsonl:
        ps = P.read_prompt_file(args.prompt_jsonl, args.prompt_seconds, alignments)
    else:
        if args.prompt_seconds is not None:
            raise P.GenerationError("--prompt-seconds cuts speech prompts; --prompt-text has none")
        if not os.path.isfile(args.prompt_text):
            raise P.GenerationError(f"{args.prompt_text}: prompt file not found")
        ps = P.read_text_prompts(args.prompt_text)
    ids = [i.strip() for i in args.ids.split(",") if i.strip()] if args.ids else None
    if ids is not None and len(set(ids)) < len(ids):
        twice = next(i for i in ids if ids.count(i) > 1)
        raise P.GenerationError(f"--ids names {twice!r} more than once (each prompt gets one row)")
    if args.limit is not None and args.limit < 1:
        raise P.GenerationError(f"--limit must be >= 1 (got {args.limit})")
    return P.select(ps, ids, args.limit)


def input_paths(args) -> list:
    """Every file or directory the command reads: outputs must stay off all of them."""
    return [args.mcore_dir, args.hf_dir, args.tokenizer, args.units_meta, args.prompt_units, args.prompt_text,
            args.prompt_jsonl, args.alignments, args.kmeans, args.extractor_model_dir, args.vocoder,
            *(args.prompt_audio or [])]


def _done_rows(out: str) -> dict[str, tuple[str, dict]]:
    """id -> (file:line, row) of the rows an interrupted run already wrote."""
    from megatron_slm.jsonio import iter_jsonl
    from megatron_slm.units.sharding import repair_tail

    repair_tail(out)
    return {obj["id"]: (where, obj) for where, obj in iter_jsonl(out) if isinstance(obj, dict) and "id" in obj}


def check_resumable(rows: dict[str, tuple[str, dict]], job, out: str) -> None:
    """--resume keeps rows only when they were made as this run makes them: the same model,
    sampling settings, output modality and units."""
    from megatron_slm.generate.sampling import GenerationError

    def same(value):  # as a row stores it
        return json.loads(json.dumps(value))

    model = {k: v for k, v in job.model_info.items() if k not in ("tp", "pp")}  # the layout changes no result
    expected = {"settings": same(job.settings()), "model": same(model), "unit_identity": same(job.unit_identity)}
    for uid, (where, row) in rows.items():
        for key, want in expected.items():
            got = row.get(key)
            if key == "model" and isinstance(got, dict):
                got = {k: v for k, v in got.items() if k not in ("tp", "pp")}
            if got != want:
                raise GenerationError(f"{where}: row {uid!r} was made with another {key} than this run "
                                      f"({json.dumps(got)[:200]} vs {json.dumps(want)[:200]}); --resume continues "
                                      f"only the same generation: use --force to replace {out}, or another --out")


def _run(args) -> int:
    from megatron_slm.eval import run as eval_run
    from megatron_slm.generate.prompts import check_unit_identity
    from megatron_slm.generate.runner import GenerationJob, run_generation
    from megatron_slm.generate.sampling import GenerationError, TokenPolicy
    from megatron_slm.generate.vocoders import check_vocoder, load_vocoder, write_wav

    rank0 = int(os.environ.get("RANK", "0")) == 0
    t0 = time.time()
    cfg = sampling_config(args)
    if args.batch_size < 1:
        raise GenerationError(f"--batch-size must be >= 1 (got {args.batch_size})")
    guard_output_file(args.out, input_paths(args), force=args.force, resume=args.resume)  # before any work
    wav_dir = (args.wav_dir or os.path.splitext(args.out)[0] + "_wav") if args.vocoder else None
    if wav_dir and rank0:
        guard_reused_dir(wav_dir, "generate", input_paths(args), flag="--wav-dir")
    vocab, tok_dir = build_vocab(args)
    model_identity = eval_run.expected_unit_identity(args.mcore_dir or args.hf_dir, tok_dir, units_meta=args.units_meta)
    ps = read_prompts(args, vocab)
    check_unit_identity(ps, model_identity, vocab.num_units)
    done_rows = _done_rows(args.out) if args.resume and os.path.exists(args.out) else {}
    done = set(done_rows)
    todo = [p for p in ps.prompts if p.id not in done]
    if not ps.prompts:
        raise GenerationError(f"{ps.source}: no usable prompts" + _skip_text(ps.skipped))
    vocoder = None
    if (args.wav_dir or args.wav_with_prompt or args.speaker) and not args.vocoder:
        raise GenerationError("--wav-dir / --wav-with-prompt / --speaker need a --vocoder")
    if args.vocoder:
        if args.output_modality == "text":
            raise GenerationError("--vocoder turns speech into audio, but --output-modality is text")
        vocoder = load_vocoder(args.vocoder, inventory=vocab.inventory)
        check_vocoder(vocoder, vocab.num_units, model_identity or ps.unit_identity)
    source, model_info = build_source(args, vocab)
    policy = TokenPolicy.for_output(vocab, source.rows, args.output_modality, stop_at_switch=not args.no_stop_at_switch)
    job = GenerationJob(source, vocab, policy, cfg, model_info, model_identity or ps.unit_identity,
                        batch_size=args.batch_size, stop_at_switch=not args.no_stop_at_switch, progress=rank0)
    check_resumable(done_rows, job, args.out)
    if rank0:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    out_f = open(args.out, "a" if args.resume else "w", encoding="utf-8") if rank0 else None

    shown: list[dict] = []

    def write(rows: list[dict]) -> None:
        for row in rows:
            if vocoder is not None:
                row["wav"] = _vocode(row, vocoder, wav_dir, args, write_wav)
            out_f.write(json.dumps(row, ensure_ascii=False) + "\n")
            if len(shown) < args.show:
                shown.append(row)
        out_f.flush()

    try:
        summary, _ = run_generation(job, todo, on_rows=write if rank0 else None)
    finally:
        if out_f is not None:
            out_f.close()
    if rank0:
        for row in shown:
            print(_preview(row))
        print(summary.line())
        if done:
            print(f"kept {len(done)} row(s) already in {args.out} (--resume)")
        if ps.skipped.total:
            print(f"skipped {ps.skipped.total} prompt record(s):" + _skip_text(ps.skipped))
        print(f"wrote {args.out}" + (f"; WAVs in {wav_dir}/" if wav_dir else "") + f" ({time.time() - t0:.1f} s)")
    return 0


def _preview(row: dict) -> str:
    if "text" in row:
        body = f"text: {row['text'].strip()!r}"
    elif "units" in row:
        body = f"{len(row['units'])} units: {' '.join(map(str, row['units'][:12]))}{' ...' if len(row['units']) > 12 else ''}"
    else:
        body = f"segments: {json.dumps(row['segments'], ensure_ascii=False)[:200]}"
    wav = f"\n    wav: {row['wav']}" if row.get("wav") else ""
    return f"  {row['id']} ({row['stop']}) {body}{wav}"


def _skip_text(skipped) -> str:
    lines = [f"\n  {reason}: {n}" for reason, n in sorted(skipped.counts.items())]
    lines += [f"\n    e.g. {ex}" for ex in skipped.examples]
    return "".join(lines)


def _vocode(row: dict, vocoder, wav_dir: str, args, write_wav) -> str | None:
    units = row.get("units")
    if units is None:  # --output-modality any: the speech segments of the continuation
        units = [u for s in row.get("segments", []) for u in s.get("units", [])]
    if args.wav_with_prompt:
        segs = row["prompt"]["segments"]
        units = [u for s in segs if "units" in s for u in s["units"]] + units
    if not units:
        return None
    path = os.path.join(wav_dir, output_name(row["id"]) + ".wav")
    write_wav(path, vocoder(units, speaker=args.speaker), vocoder.sample_rate)
    return path
