"""Preference pairs from a spoken story corpus (tools/make_story_corpus.py), SpokenSwag-style.

    pairs, counts = story_pairs("corpora/stories", "units/stories.jsonl", prompt="speech", completion="speech")

Per story of the train split: prompt = all sentences but the last; chosen = the true last sentence;
rejected = the last sentence of another train story (`other-story` negatives; a story whose last
sentence reads the same is never drawn), or a continuation of the prompt sampled from a model
(`sampled`, on-policy negatives: in the completion's modality, at most as many tokens as the true
ending, with SlamKit's generation settings and a seed per story). Validation and test stories are never used, neither as
prompts nor as negatives. Speech parts are the story's units cut at the last sentence's first
word with SlamKit's span rule (a run belongs to the span when its END time falls at or after the
word's start: `bisect_left` over the runs' end times); text parts are the sentences. Every pair
also carries SlamKit's transcript fields `prompt_text` and `chosen_text` (and `rejected_text` for
an other-story negative or sampled text; sampled speech has no transcript), which the repetition filter of
tools/preprocess_data.py preference --max-auto-bleu reads.
"""
from __future__ import annotations

import bisect
import json
from pathlib import Path
import numpy as np

from megatron_slm.jsonio import iter_jsonl
from megatron_slm.units.records import iter_records

MODALITIES = ("speech", "text")


class StoryPairError(ValueError):
    """The corpus or units cannot give pairs (one line, names the file)."""


def _stories(corpus: Path, split: str) -> list[dict]:
    path = corpus / "stories.jsonl"
    if not path.is_file():
        raise StoryPairError(f"{path} does not exist (is {corpus} made by tools/make_story_corpus.py?)")
    return [obj for _, obj in iter_jsonl(path, error=StoryPairError) if obj.get("split") == split]


def _words(corpus: Path, split: str) -> dict[str, list[dict]]:
    path = corpus / f"alignments.{split}.jsonl"
    if not path.is_file():
        raise StoryPairError(f"{path} does not exist")
    return {obj["id"]: obj["words"] for _, obj in iter_jsonl(path, error=StoryPairError)}


def split_units(units: list[int], durations: list[int], unit_seconds: float, start: float) -> tuple[list, list]:
    """(units before `start`, units from it on): SlamKit's rule on the runs' end times."""
    ends = np.cumsum(durations) * unit_seconds
    cut = bisect.bisect_left(ends.tolist(), start)
    return units[:cut], units[cut:]


def story_pairs(corpus: str | Path, units_path: str | Path, prompt: str = "speech", completion: str = "speech",
                seed: int = 0, split: str = "train") -> tuple[list[dict], dict]:
    """(records for tools/preprocess_data.py preference, counts). Pairs of another `split` (test: for
    evaluation only) draw their other-story negatives from that split."""
    corpus = Path(corpus)
    for name, value in (("prompt", prompt), ("completion", completion)):
        if value not in MODALITIES:
            raise StoryPairError(f"--{name} {value!r}: choose speech or text")
    stories = _stories(corpus, split)
    words = _words(corpus, split)
    units = {}
    if "speech" in (prompt, completion):
        units = {r.id: r for r in iter_records(units_path)}
    parts, counts = [], {"stories": len(stories), "pairs": 0, "no_units": 0, "too_short": 0}
    for st in stories:
        sentences = st["sentences"]
        if len(sentences) < 2 or st["id"] not in words:
            counts["too_short"] += 1
            continue
        last_words = len(sentences[-1].split())
        ws = words[st["id"]]
        speech = None
        if units:
            rec = units.get(st["id"])
            if rec is None:
                counts["no_units"] += 1
                continue
            speech = split_units(rec.units, rec.durations, rec.unit_seconds, ws[len(ws) - last_words]["start"])
            if not speech[0] or not speech[1]:
                counts["too_short"] += 1
                continue
        text = (" ".join(sentences[:-1]), " " + sentences[-1])
        parts.append((st["id"], sentences[-1], text, speech))
    rng = np.random.default_rng(seed)
    pairs = []
    for i, (sid, ending, text, speech) in enumerate(parts):
        others = [j for j, p in enumerate(parts) if p[1] != ending]
        if not others:
            continue
        j = int(rng.choice(others))

        def part(which: int, index: int, modality: str):
            _, _, t, s = parts[index]
            return {"units": s[which]} if modality == "speech" else t[which]

        pairs.append({"id": sid, "negative_from": parts[j][0], "prompt": part(0, i, prompt),
                      "chosen": part(1, i, completion), "rejected": part(1, j, completion),
                      # SlamKit's transcript fields (its repetition filter reads prompt_text + " " + chosen_text)
                      "prompt_text": text[0], "chosen_text": ending, "rejected_text": parts[j][1]})
    counts["pairs"] = len(pairs)
    return pairs, counts


def sample_negatives(pairs: list[dict], hf_dir: str | Path, seed: int = 0, batch: int = 8) -> int:
    """Replace each pair's rejected completion by a continuation of its prompt sampled from the HF
    model in `hf_dir` (its tokenizer/ or own tokenizer files give the vocabulary), in the chosen
    completion's modality and at most its length in tokens. The prompt is laid out as the pair
    will be in training (with the completion's modality token when prompt and completion differ).
    A text sample is its own transcript (`rejected_text`); a speech sample has none here (no ASR).
    Returns how many samples came out empty or equal to the chosen and kept the other-story
    negative instead."""
    import torch
    from transformers import AutoModelForCausalLM

    from megatron_slm.generate.backends import HFSource
    from megatron_slm.generate.decode import decode
    from megatron_slm.generate.sampling import SamplingConfig, TokenPolicy
    from megatron_slm.posttrain import records
    from megatron_slm.vocab import SpeechVocab

    hf_dir = Path(hf_dir)
    vocab = SpeechVocab.from_pretrained(hf_dir / "tokenizer" if (hf_dir / "tokenizer").is_dir() else hf_dir)
    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32, local_files_only=True)
    src = HFSource(model, vocab)
    policies = {m: TokenPolicy.for_output(vocab, src.rows, m) for m in MODALITIES}
    kept = 0
    with torch.inference_mode():
        for start in range(0, len(pairs), batch):
            chunk = pairs[start:start + batch]
            for modality in MODALITIES:  # one decode per completion modality (a file has one)
                group = [p for p in chunk if _modality(p["chosen"]) == modality]
                if not group:
                    continue
                prompts, lengths = [], []
                for p in group:
                    parts = records.parse_record(p, records.PREFERENCE, p["id"])
                    ids = records.layout(parts, records.PREFERENCE, vocab, p["id"])
                    chosen = ids.completions[0][:-1]  # without its EOS
                    opener = chosen[:1] if _modality(p["prompt"]) != modality else chosen[:0]
                    prompts.append([*ids.prompt.tolist(), *opener.tolist()])
                    lengths.append(len(chosen) - len(opener))
                cfg = SamplingConfig.preset("slamkit", max_new_tokens=max(lengths), seed=seed)
                for p, n, cont in zip(group, lengths, decode(src, prompts, [p["id"] for p in group],
                                                               policies[modality], cfg)):
                    kept += not _take_sample(p, cont.ids, n, modality, vocab)
    return kept


def _modality(part) -> str:
    return "speech" if isinstance(part, dict) and "units" in part else "text"


def _take_sample(pair: dict, ids, n: int, modality: str, vocab) -> bool:
    """Make the sample (its first `n` tokens of the completion's modality) the pair's rejected;
    False when it is empty or equal to the chosen."""
    if modality == "speech":
        units = [i - vocab.unit_offset for i in ids if vocab.unit_offset <= i < vocab.speech_id][:n]
        if not units or units == pair["chosen"]["units"]:
            return False
        pair["rejected"], pair["negative_from"] = {"units": units}, "sampled"
        pair.pop("rejected_text", None)
        return True
    text_ids = [i for i in ids if i < vocab.text_vocab_size and i != vocab.eod][:n]
    text = vocab.decode(text_ids)
    if not text.strip() or text.strip() == pair["chosen"].strip():
        return False
    pair["rejected"], pair["negative_from"], pair["rejected_text"] = text, "sampled", text.strip()
    return True


def write_eval_items(pairs: list[dict], out: str | Path, units_path: str | Path, task: str) -> None:
    """Speech pairs as eval items (tools/eval_slm.py --items): the prompt conditions both endings;
    accuracy = how often the true ending scores higher."""
    from megatron_slm.units.records import compatibility_key, read_meta

    header = {"format": "megatron-slm-eval-items", "version": 1, "task": task,
              "unit_identity": compatibility_key(read_meta(units_path))}
    lines = [header] + [{"id": p["id"], "task": task, "part": None, "positive": p["chosen"],
                         "negatives": [p["rejected"]], "prompt": p["prompt"], "meta": {"negative_from": p["negative_from"]}}
                        for p in pairs]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")


def write_prompts(pairs: list[dict], out: str | Path, units_path: str | Path) -> None:
    """The pairs' speech prompts as segment prompts (tools/generate.py --prompt-jsonl, the prompt
    files of tools/eval_slm.py's generative tasks), whole, with the units' sidecar beside them."""
    from megatron_slm.units.records import read_meta, write_meta

    if not all(isinstance(p["prompt"], dict) for p in pairs):
        raise StoryPairError("--prompts-out writes speech prompts: use --prompt speech")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps({"id": p["id"], "segments": [{"units": p["prompt"]["units"]}]}) + "\n"
                           for p in pairs), encoding="utf-8")
    write_meta(out, read_meta(units_path))


def write_pairs(pairs: list[dict], out: str | Path, units_path: str | Path | None) -> None:
    """The JSONL, and beside it the units' identity sidecar when the pairs hold units."""
    from megatron_slm.units.records import read_meta, write_meta

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(p) + "\n" for p in pairs), encoding="utf-8")
    if units_path is not None:
        write_meta(out, read_meta(units_path))

