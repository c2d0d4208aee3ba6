"""Generative metrics: GenPPL and Auto-BLEU of continuations, as SlamKit computes them, and the
eval tasks that run them (`tools/eval_slm.py --tasks genppl`).

  GenPPL     each speech continuation is vocoded, transcribed by Whisper (transformers, from a
             local directory) and scored by a text LM (local directory): per continuation the
             mean NLL of its tokens after the first; GenPPL = exp(mean over continuations).
             Text continuations (cross-modal S->T) skip the ASR. Lower is better.
  Auto-BLEU  per transcript, the share of its word bigrams that occur elsewhere in the same
             transcript (0 when it has none); the mean over continuations. Measures repetition:
             lower is better. Words come from NLTK's word tokenizer when nltk is installed
             (SlamKit's choice), otherwise from an equivalent regex (words, numbers, punctuation);
             the report records which.

  Unit-level Auto-BLEU (task autobleu_units) -- not SlamKit's metric, for models without an ASR
             model: the same count over the generated speech-unit sequence itself (each unit
             token a "word"; units are deduplicated runs, so a repeated bigram is a repeated pair
             of sounds, not one held sound; a codec's semantic codebook only). Not comparable
             with word-level Auto-BLEU.

Tasks (prompts from `<data>/<task>.jsonl`: a units JSONL with its sidecar, or segment prompts):
  genppl, autobleu             speech continuations (need --vocoder and --asr-model)
  genppl_text, autobleu_text   text continuations (speech prompts: cross-modal S->T)
  autobleu_units               speech continuations, unit-level Auto-BLEU (no vocoder, no ASR)
genppl tasks need --ppl-model. Both metrics are reported for every task; CIs are percentile
bootstraps over continuations (GenPPL's by exponentiating the bootstrapped mean NLL).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch

from megatron_slm.generate.sampling import GenerationError

# task -> (output modality, needs the text LM, what is scored: the transcript of the speech
# (vocoder + ASR), the text itself, or the generated units themselves)
TASKS = {
    "genppl": ("speech", True, "transcript"),
    "autobleu": ("speech", False, "transcript"),
    "genppl_text": ("text", True, "text"),
    "autobleu_text": ("text", False, "text"),
    "autobleu_units": ("speech", False, "units"),
}
ASR_SAMPLE_RATE = 16000
_WORDS = re.compile(r"\w+(?:['’]\w+)*|[^\w\s]", re.UNICODE)


def is_generative_task(task: str) -> bool:
    return task in TASKS


# --------------------------------------------------------------------------- Auto-BLEU


def word_tokenizer(kind: str = "auto"):
    """(name, tokenize) -- `nltk` (NLTKWordTokenizer, no downloads needed), `regex`, or `auto`."""
    if kind in ("auto", "nltk"):
        try:
            from nltk.tokenize import NLTKWordTokenizer

            return "nltk", NLTKWordTokenizer().tokenize
        except ImportError:
            if kind == "nltk":
                raise GenerationError("Auto-BLEU with the NLTK tokenizer needs `pip install nltk`") from None
    if kind not in ("auto", "regex"):
        raise GenerationError(f"unknown word tokenizer {kind!r} (auto, nltk, regex)")
    return "regex", _WORDS.findall


def unit_words(units: Sequence[int], inventory=None) -> list[int]:
    """The "words" of unit-level Auto-BLEU: the units, or for a multi-codebook codec the codes of
    its semantic codebook (0) alone -- a frame's n_q codes are one sound, and bigrams that span
    codebooks count the codebook order, not repetition."""
    if inventory is None or inventory.num_codebooks == 1:
        return [int(u) for u in units]
    return [int(u) for u, q in zip(units, inventory.codebook_of(units)) if q == 0]


def auto_bleu(text, n: int = 2, tokenize=None) -> float:
    """Share of the n-grams of `text` that also occur elsewhere in it (0.0 without n-grams). `text`
    is what `tokenize` splits into words (a string; a unit list with `tokenize=list`)."""
    words = (tokenize or word_tokenizer()[1])(text)
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0.0
    counts: dict[tuple, int] = {}
    for g in grams:
        counts[g] = counts.get(g, 0) + 1
    return sum(1 for g in grams if counts[g] > 1) / len(grams)


# --------------------------------------------------------------------------- ASR and text LM


class WhisperASR:
    """Whisper (WhisperForConditionalGeneration + its processor) from a local directory."""

    def __init__(self, model, processor, language: Optional[str] = None, max_new_tokens: int = 128):
        self.model, self.processor = model.eval(), processor
        self.device = next(model.parameters()).device
        gen = getattr(model, "generation_config", None)
        # a multilingual checkpoint takes language/task; a model without the tables (tiny test models) does not
        self.generate_kw = {"max_new_tokens": max_new_tokens}
        if language and getattr(gen, "lang_to_id", None):
            self.generate_kw.update(language=language, task="transcribe")

    @classmethod
    def from_dir(cls, path: str, device: str = "cpu", language: Optional[str] = "en", max_new_tokens: int = 128) -> "WhisperASR":
        from transformers import AutoProcessor, WhisperForConditionalGeneration

        try:
            processor = AutoProcessor.from_pretrained(path, local_files_only=True)
            model = WhisperForConditionalGeneration.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError) as e:
            raise GenerationError(f"--asr-model {path}: cannot load a Whisper model and processor ({e})") from None
        return cls(model.to(device), processor, language, max_new_tokens)

    @torch.no_grad()
    def transcribe(self, wavs: Sequence[np.ndarray], sample_rate: int, batch_size: int = 8) -> list[str]:
        from scipy.signal import resample_poly

        out: list[str] = []
        for s in range(0, len(wavs), batch_size):
            batch = []
            for w in wavs[s:s + batch_size]:
                w = np.asarray(w, dtype=np.float32)
                if sample_rate != ASR_SAMPLE_RATE:
                    g = math.gcd(int(sample_rate), ASR_SAMPLE_RATE)
                    w = resample_poly(w, ASR_SAMPLE_RATE // g, int(sample_rate) // g).astype(np.float32)
                batch.append(w)
            feats = self.processor(batch, sampling_rate=ASR_SAMPLE_RATE, return_tensors="pt", return_attention_mask=True)
            ids = self.model.generate(feats["input_features"].to(self.device, self.model.dtype),
                                      attention_mask=feats["attention_mask"].to(self.device), **self.generate_kw)
            out += [t.strip() for t in self.processor.batch_decode(ids, skip_special_tokens=True)]
        return out


class TextLMScorer:
    """A causal text LM from a local directory: mean NLL per text (tokens after the first)."""

    def __init__(self, model, tokenizer):
        self.model, self.tok = model.eval(), tokenizer
        self.device = next(model.parameters()).device

    @classmethod
    def from_dir(cls, path: str, device: str = "cpu") -> "TextLMScorer":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError) as e:
            raise GenerationError(f"--ppl-model {path}: cannot load a causal LM and its tokenizer ({e})") from None
        return cls(model.to(device), tok)

    @torch.no_grad()
    def mean_nll(self, texts: Sequence[str]) -> list[Optional[float]]:
        """None for a text with fewer than two tokens (no next-token prediction to score)."""
        out: list[Optional[float]] = []
        for text in texts:
            ids = self.tok(text, return_tensors="pt")["input_ids"].to(self.device)
            if ids.shape[1] < 2:
                out.append(None)
                continue
            logits = self.model(input_ids=ids).logits[0, :-1].float()
            out.append(float(torch.nn.functional.cross_entropy(logits, ids[0, 1:])))
        return out


# --------------------------------------------------------------------------- the eval task


@dataclass
class GenerativeSettings:
    asr_model: Optional[str] = None
    ppl_model: Optional[str] = None
    vocoder: Optional[str] = None
    prompt_seconds: Optional[float] = 3.0
    alignments: Optional[str] = None
    asr_language: Optional[str] = "en"
    autobleu_n: int = 2
    word_tokenizer: str = "auto"
    limit: Optional[int] = None


def _value_entry(metric: str, values: Sequence[float], n_boot: int, transform=None, skipped: int = 0) -> dict:
    from megatron_slm.eval.report import bootstrap_ci

    arr = np.asarray(values, dtype=np.float64)
    f = transform or (lambda x: x)
    if arr.size == 0:
        return {"metric": metric, "value": float("nan"), "ci95": [float("nan")] * 2, "n": 0, "skipped": skipped}
    lo, hi = bootstrap_ci(arr, n_boot)
    return {"metric": metric, "value": float(f(arr.mean())), "ci95": [float(f(lo)), float(f(hi))],
            "n": int(arr.size), "skipped": skipped}


def _generated(rows: Sequence[dict]) -> Optional[dict]:
    """How long the continuations are and why they stopped: Auto-BLEU depends on length (a short
    continuation has few n-grams to repeat), so a comparison of models needs these beside it."""
    if not rows or not all("num_generated" in r and "stop" in r for r in rows):
        return None
    stops: dict[str, int] = {}
    for r in rows:
        stops[r["stop"]] = stops.get(r["stop"], 0) + 1
    return {"mean_new_tokens": float(np.mean([r["num_generated"] for r in rows])), "stops": dict(sorted(stops.items()))}


def summarize_generation(task: str, rows: Sequence[dict], n_boot: int = 1000) -> dict:
    """{task: entry} with GenPPL (when scored) as the task's value and Auto-BLEU as a part; the
    continuations' mean length and stop reasons as `generated`."""
    nll = [r["nll"] for r in rows if r.get("nll") is not None]
    bleu = [r["autobleu"] for r in rows]
    if TASKS[task][2] == "units":
        entry = _value_entry("unit_autobleu", bleu, n_boot)
        entry["note"] = (f"unit-level Auto-BLEU: share of repeated unit {rows[0]['autobleu_n'] if rows else 2}-grams "
                         f"in each generated speech-unit sequence (no transcript); not word-level, not comparable "
                         f"with SlamKit's Auto-BLEU")
    else:
        parts = {"autobleu": _value_entry("autobleu", bleu, n_boot)}
        if TASKS[task][1]:
            entry = _value_entry("genppl", nll, n_boot, transform=math.exp, skipped=len(rows) - len(nll))
            entry["parts"] = parts
        else:
            entry = parts["autobleu"]
    generated = _generated(rows)
    if generated is not None:
        entry["generated"] = generated
    return {task: entry}


def length_matched_unit_autobleu(rows_a: Sequence[dict], rows_b: Sequence[dict], n: int = 2,
                                 n_boot: int = 1000, inventory=None) -> dict:
    """Unit-level Auto-BLEU of two models' continuations of the same prompts, at equal length: per
    prompt id, both unit sequences cut to the shorter one's length. Prompts where that length gives
    fewer than two n-grams (nothing can repeat) are left out and counted. Returns each model's mean
    with its CI, and the paired difference b - a with its CI. Words as in `unit_words`."""
    from megatron_slm.eval.report import bootstrap_ci

    b_by_id = {r["id"]: unit_words(r["units"], inventory) for r in rows_b}
    a_vals, b_vals, dropped = [], [], 0
    for r in rows_a:
        if r["id"] not in b_by_id:
            continue
        a, b = unit_words(r["units"], inventory), b_by_id[r["id"]]
        k = min(len(a), len(b))
        if k < n + 1:
            dropped += 1
            continue
        a_vals.append(auto_bleu(a[:k], n, list))
        b_vals.append(auto_bleu(b[:k], n, list))
    diff = np.asarray(b_vals) - np.asarray(a_vals)
    return {"a": _value_entry("unit_autobleu", a_vals, n_boot), "b": _value_entry("unit_autobleu", b_vals, n_boot),
            "b_minus_a": {"value": float(diff.mean()) if diff.size else float("nan"),
                          "ci95": list(bootstrap_ci(diff, n_boot)), "n": int(diff.size)},
            "too_short": dropped, "n_gram": n}


def run_generative_task(task: str, path: str, source, vocab, cfg, gen: GenerativeSettings, model_info: dict,
                        model_identity: Optional[dict], batch_size: int = 16, progress: bool = False,
                        asr: Optional[WhisperASR] = None, lm: Optional[TextLMScorer] = None, vocoder=None) -> list[dict]:
    """Generate continuations of the prompts in `path` and score them; per-continuation rows
    (rank 0; other ranks take part in generation and get []). `asr`/`lm`/`vocoder` are built from
    `gen` when not given (so several tasks can share them)."""
    from megatron_slm.corpus.alignments import AlignmentIndex
    from megatron_slm.generate.prompts import check_unit_identity, read_prompt_file, select
    from megatron_slm.generate.runner import GenerationJob, _is_rank0, run_generation
    from megatron_slm.generate.sampling import TokenPolicy
    from megatron_slm.generate.vocoders import check_vocoder, load_vocoder

    output, needs_lm, scored = TASKS[task]
    transcribe = scored == "transcript"
    if transcribe and not (gen.vocoder or vocoder):
        raise GenerationError(f"task {task!r} transcribes speech continuations: give --vocoder")
    if transcribe and not (gen.asr_model or asr):
        raise GenerationError(f"task {task!r} needs an ASR model: give --asr-model (a local Whisper directory)")
    if needs_lm and not (gen.ppl_model or lm):
        raise GenerationError(f"task {task!r} needs a text LM for the perplexity: give --ppl-model")
    alignments = AlignmentIndex(gen.alignments) if gen.alignments else None
    ps = select(read_prompt_file(path, gen.prompt_seconds if _speech_file(path) else None, alignments), limit=gen.limit)
    if not ps.prompts:
        raise GenerationError(f"{path}: no usable prompts")
    check_unit_identity(ps, model_identity, vocab.num_units)
    rank0 = _is_rank0()
    if rank0 and transcribe:
        vocoder = vocoder or load_vocoder(gen.vocoder, inventory=vocab.inventory)
        check_vocoder(vocoder, vocab.num_units, model_identity or ps.unit_identity)
    policy = TokenPolicy.for_output(vocab, source.rows, output)
    job = GenerationJob(source, vocab, policy, cfg, model_info, model_identity or ps.unit_identity,
                        batch_size=batch_size, progress=progress)
    _, rows = run_generation(job, ps.prompts)
    if not rank0:
        return []
    if scored == "units":
        return [{"id": r["id"], "task": task, "units": r["units"], "autobleu": auto_bleu(unit_words(r["units"], vocab.inventory), gen.autobleu_n, list),
                 "autobleu_n": gen.autobleu_n, "level": "units", "num_generated": r["num_generated"], "stop": r["stop"]}
                for r in rows]
    if transcribe:
        asr = asr or WhisperASR.from_dir(gen.asr_model, language=gen.asr_language)
        wavs = [vocoder(r["units"]) if r["units"] else np.zeros(0, np.float32) for r in rows]
        spoken = [i for i, w in enumerate(wavs) if w.size]
        texts = [""] * len(rows)
        for i, t in zip(spoken, asr.transcribe([wavs[i] for i in spoken], vocoder.sample_rate)):
            texts[i] = t
    else:
        texts = [r["text"].strip() for r in rows]
    tok_name, tokenize = word_tokenizer(gen.word_tokenizer)
    nlls: list[Optional[float]] = [None] * len(rows)
    if needs_lm:
        lm = lm or TextLMScorer.from_dir(gen.ppl_model)
        nlls = lm.mean_nll(texts)
    return [{"id": r["id"], "task": task, "transcript": t, "nll": nll, "autobleu": auto_bleu(t, gen.autobleu_n, tokenize),
             "num_generated": r["num_generated"], "stop": r["stop"], "word_tokenizer": tok_name}
            for r, t, nll in zip(rows, texts, nlls)]


def _speech_file(path: str) -> bool:
    from megatron_slm.generate.prompts import detect_jsonl_kind

    return detect_jsonl_kind(path) == "units"


def source_for(backend, vocab, mcore_dir: Optional[str] = None):
    """A generation source over the model a scoring backend (eval/likelihood.py) already holds."""
    from megatron_slm.eval.likelihood import HFBackend
    from megatron_slm.generate.backends import HFSource, MegatronSource

    if isinstance(backend, HFBackend):
        return HFSource(backend.model, vocab)
    from megatron_slm.models.record import read_model_record

    arch = read_model_record(mcore_dir).arch
    return MegatronSource(backend.models, vocab, int(backend.allowed.shape[0]), arch.max_position_embeddings)


def evaluate_generative(tasks: Sequence[str], data_dir: str, backend, vocab, cfg, gen: GenerativeSettings,
                        model_info: dict, model_identity: Optional[dict], mcore_dir: Optional[str] = None,
                        batch_size: int = 16, n_boot: int = 1000, progress: bool = False) -> tuple[dict, list[dict]]:
    """Run every generative task on `<data_dir>/<task>.jsonl` with one model, ASR, LM and vocoder;
    returns ({task: summary entry}, per-continuation rows) on rank 0 (({}, []) elsewhere)."""
    import os

    from megatron_slm.generate.runner import _is_rank0

    source = source_for(backend, vocab, mcore_dir)
    shared: dict = {}
    summary: dict = {}
    rows_all: list[dict] = []
    for task in tasks:
        path = os.path.join(data_dir, f"{task}.jsonl")
        if not os.path.isfile(path):
            raise GenerationError(f"task {task!r}: {path} does not exist (a prompt file: a units JSONL with its "
                                  ".meta.json, or segment prompts)")
        transcribe = TASKS[task][2] == "transcript"
        if _is_rank0():  # built once, shared by the tasks that need them
            if transcribe and "vocoder" not in shared and gen.vocoder:
                from megatron_slm.generate.vocoders import load_vocoder

                shared["vocoder"] = load_vocoder(gen.vocoder, inventory=vocab.inventory)
            if transcribe and "asr" not in shared and gen.asr_model:
                shared["asr"] = WhisperASR.from_dir(gen.asr_model, language=gen.asr_language)
            if TASKS[task][1] and "lm" not in shared and gen.ppl_model:
                shared["lm"] = TextLMScorer.from_dir(gen.ppl_model)
        rows = run_generative_task(task, path, source, vocab, cfg, gen, model_info, model_identity,
                                   batch_size=batch_size, progress=progress, **shared)
        if _is_rank0():
            summary.update(summarize_generation(task, rows, n_boot))
            rows_all += rows
    return summary, rows_all
