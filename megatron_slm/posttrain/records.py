"""Post-training records: what a line of a preference or SFT file holds, and its token layout.

One JSON object per line:

    preference  {"id": ..., "prompt": P, "chosen": C, "rejected": R}
    sft         {"id": ..., "prompt": P, "response": C}

where each part is text, units or an interleaved list of segments:

    "a string"                          text
    {"text": "..."}                     text
    {"units": [3, 17, ...]}             speech units (optional "duration": run lengths, ignored)
    [{"text": " the"}, {"units": [..]}, ...]   segments in order

SlamKit's preference features (its `preference_alignment_feature_extractor.py`: `prompt_path`,
`chosen_path`, `rejected_path` and the parts as `{"units": [...], "duration": [...]}`, also found
nested as `{"audio_repr": ...}`) are read by the same parser.

Layout (SlamKit's DPO rows, by megatron_slm/document.py): prompt = BOS + prompt tokens; each
completion = its tokens + EOS. Where a record mixes text and speech, a modality token opens every
segment whose modality differs from the one before it (the first prompt segment included);
speech-only and text-only records carry none, as in pre-training. Over-long rows are truncated as TRL does: the prompt from the left (BOS
kept) to `max_prompt_length`, then the completions from the right, so the row fits `max_length`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

TEXT, SPEECH = "text", "speech"
PREFERENCE, SFT = "preference", "sft"
PARTS = {PREFERENCE: ("prompt", "chosen", "rejected"), SFT: ("prompt", "response")}

REASONS = {
    "malformed_json": "line is not a JSON object",
    "missing_field": "a part (prompt/chosen/rejected/response) is absent or not text, units or segments",
    "invalid_units": "units not a list of ints in [0, K)",
    "empty_completion": "a completion (chosen, rejected, response) holds no tokens",
    "same_completions": "chosen == rejected (no preference to learn)",
    "prompt_fills_row": "the prompt alone reaches max_length: no completion token would be left",
    "repetitive": "--max-auto-bleu: Auto-BLEU of prompt + chosen text >= the maximum (SlamKit's repetition filter)",
    "no_text": "--max-auto-bleu: no text to measure (no prompt_text/chosen_text, no text segment in prompt or chosen)",
}

_UNIT_STRING = re.compile(r"<Un\s*(\d+)>")


class PairRecordError(ValueError):
    """One record cannot be used; `reason` is a key of REASONS."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


Segment = tuple[str, Any]  # (TEXT, str) or (SPEECH, list[int])


def _units(value: Any, where: str) -> list[int]:
    if isinstance(value, str):  # SlamKit's stringified form "<Un3><Un17>..."
        found = _UNIT_STRING.findall(value)
        if not found or _UNIT_STRING.sub("", value).strip():
            raise PairRecordError(f"{where}: units string is not a sequence of <UnN> tokens", "invalid_units")
        return [int(u) for u in found]
    if not isinstance(value, (list, tuple)) or not all(isinstance(u, int) and not isinstance(u, bool) for u in value):
        raise PairRecordError(f"{where}: units must be a list of ints", "invalid_units")
    return list(value)


def parse_part(value: Any, where: str) -> list[Segment]:
    """A part (prompt, chosen, ...) as a list of (modality, content) segments."""
    if isinstance(value, str):
        return [(TEXT, value)]
    if isinstance(value, dict):
        if "audio_repr" in value:  # SlamKit's documented wrapping
            return parse_part(value["audio_repr"] if isinstance(value["audio_repr"], dict)
                              else {"units": value["audio_repr"]}, where)
        if "units" in value:
            return [(SPEECH, _units(value["units"], f"{where}.units"))]
        if isinstance(value.get("text"), str):
            return [(TEXT, value["text"])]
        raise PairRecordError(f"{where}: a segment needs 'text' or 'units'", "missing_field")
    if isinstance(value, list) and value and all(isinstance(s, (dict, str)) for s in value):
        return [seg for i, s in enumerate(value) for seg in parse_part(s, f"{where}[{i}]")]
    raise PairRecordError(f"{where}: expected text, {{'units': [...]}} or a list of segments", "missing_field")


def parse_record(obj: Any, kind: str, where: str) -> dict[str, list[Segment]]:
    """{part name: segments} of one line; PairRecordError names the field."""
    if not isinstance(obj, dict):
        raise PairRecordError(f"{where}: not a JSON object", "malformed_json")
    out = {}
    for name in PARTS[kind]:
        if name not in obj:
            raise PairRecordError(f"{where}: field {name!r} missing", "missing_field")
        out[name] = parse_part(obj[name], f"{where}: field {name!r}")
    return out


def has_units(parts: dict[str, list[Segment]]) -> bool:
    return any(m == SPEECH for segs in parts.values() for m, _ in segs)


def repetition_text(obj: dict, parts: dict[str, list[Segment]], where: str) -> Optional[str]:
    """The text SlamKit's repetition filter measures: `prompt_text + " " + chosen_text` when the
    record has those fields (SlamKit's; tools/make_preference_data.py writes them too), else the
    text segments of prompt and chosen joined by spaces; None when it has no text at all. A record
    with only one of the two fields, or one that is not a string, raises (reason no_text)."""
    if "prompt_text" in obj or "chosen_text" in obj:
        p, c = obj.get("prompt_text"), obj.get("chosen_text")
        if not isinstance(p, str) or not isinstance(c, str):
            raise PairRecordError(f"{where}: the repetition filter reads prompt_text and chosen_text together; "
                                  f"this record lacks one of them or holds a non-string", "no_text")
        return p + " " + c
    texts = [content for name in ("prompt", "chosen") for modality, content in parts.get(name, ()) if modality == TEXT]
    return " ".join(texts) if texts else None


# --------------------------------------------------------------------------- layout


@dataclass
class PairIds:
    """Token ids of one record: prompt (with BOS), completions (each with EOS)."""
    prompt: np.ndarray
    completions: list[np.ndarray]  # [chosen, rejected] or [response]


def _segments(segs: Sequence[Segment], vocab, previous: Optional[str], where: str) -> list:
    """document.py segments of one part (text after speech gets its leading space there)."""
    from megatron_slm import document

    out = []
    for modality, content in segs:
        if modality == SPEECH:
            bad = [u for u in content if not 0 <= u < vocab.num_units]
            if bad:
                raise PairRecordError(f"{where}: unit {bad[0]} outside [0, {vocab.num_units})", "invalid_units")
            out.append(document.speech(vocab, content))
        else:
            out.append(document.text(vocab, content, after_speech=previous == SPEECH))
        previous = modality
    return out


def layout(parts: dict[str, list[Segment]], kind: str, vocab, where: str) -> PairIds:
    """The rows of megatron_slm.document's layout: BOS + prompt, then each completion + EOS, with
    modality tokens where the record mixes modalities. The prompt is what the rows share; all that
    follows it (a modality token that opens a completion included) is the completion."""
    from megatron_slm import document

    markers = document.Markers.of(vocab)
    mixed = len({m for segs in parts.values() for m, _ in segs}) > 1
    prompt_segs = _segments(parts["prompt"], vocab, None, f"{where}: field 'prompt'")
    prompt = document.layout(prompt_segs, markers, interleaved=mixed).ids
    last = parts["prompt"][-1][0] if parts["prompt"] else None
    completions = []
    for name in PARTS[kind][1:]:
        segs = _segments(parts[name], vocab, last, f"{where}: field {name!r}")
        if not sum(len(seg.ids) for seg in segs):
            raise PairRecordError(f"{where}: field {name!r} is empty", "empty_completion")
        row = document.layout(prompt_segs + segs, markers, interleaved=mixed, end=True).ids
        completions.append(row[len(prompt):])
    if kind == PREFERENCE and np.array_equal(completions[0], completions[1]):
        raise PairRecordError(f"{where}: chosen and rejected are the same", "same_completions")
    if len(prompt) == 0:
        raise PairRecordError(f"{where}: field 'prompt' is empty and the tokenizer has no BOS: the first "
                              f"completion token would have no context", "missing_field")
    return PairIds(np.asarray(prompt, dtype=np.int64), completions)


@dataclass
class Truncation:
    prompt: bool = False
    completions: bool = False


def truncate(pair: PairIds, max_length: int, max_prompt_length: int, keep_bos: bool, where: str
             ) -> tuple[PairIds, Truncation]:
    """TRL's rule: when prompt + the longer completion exceeds `max_length`, keep the last
    `max_prompt_length` prompt tokens (a BOS stays first), then cut completions from the right
    to `max_length - len(prompt)`."""
    longest = max(len(c) for c in pair.completions)
    prompt, done = pair.prompt, Truncation()
    if len(prompt) + longest > max_length and len(prompt) > max_prompt_length:
        head = prompt[:1] if keep_bos else prompt[:0]
        prompt = np.concatenate([head, prompt[len(prompt) - (max_prompt_length - len(head)):]])
        done.prompt = True
    room = max_length - len(prompt)
    if room <= 0:
        raise PairRecordError(f"{where}: the prompt alone has {len(prompt)} tokens >= max_length {max_length}",
                              "prompt_fills_row")
    completions = []
    for c in pair.completions:
        if len(c) > room:
            c, done.completions = c[:room], True
        completions.append(c)
    return PairIds(prompt, completions), done
