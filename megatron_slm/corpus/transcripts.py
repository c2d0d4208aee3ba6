"""What tools/align_words.py reads and writes.

Input: a transcripts JSONL, one `{"id", "audio", "text"}` per line (audio relative to the file's
folder; an alignments.jsonl works too, its words are ignored), or a Lhotse CutSet / supervisions
manifest / Shar directory, where every supervision with a text is one utterance (its span of the
cut's audio).

Output: our alignment JSONL (`{"id", "audio", "text", "words": [{"word", "start", "end",
"confidence"}], "unaligned": [{"index", "word", "reason"}]}`, the format of
examples/data/tiny_corpus/alignments.jsonl plus the two extra fields), or a Lhotse CutSet
(`.jsonl.gz`) whose supervisions carry `alignment["word"]` = AlignmentItem(symbol, start,
duration, score=confidence) in the recording's time frame. Lhotse inputs are written as Lhotse.
"""
from __future__ import annotations

import dataclasses
import json
import os

from megatron_slm.jsonio import iter_jsonl


class CorpusError(ValueError):
    """Bad input: the message names the file, line and field."""


@dataclasses.dataclass
class Utterance:
    id: str
    audio: object            # a file path, or a audio.sources.AudioSource (a span, a Shar member)
    text: str
    audio_label: str         # the "audio" field written to JSONL
    offset: float = 0.0      # where the utterance starts in its recording (Lhotse time frame)
    cut: object = None       # Lhotse input: the cut and the index of the supervision
    supervision: int = -1


def read_transcripts(path: str) -> tuple[list[Utterance], str]:
    """(utterances, "jsonl" | "lhotse")."""
    from megatron_slm.corpus.words import AlignmentError
    from megatron_slm.corpus.lhotse_manifests import detect

    try:
        kind = detect(path)
    except AlignmentError as e:
        raise CorpusError(str(e)) from None
    if kind is not None:
        return _read_lhotse(path), "lhotse"
    if not os.path.isfile(path):
        raise CorpusError(f"{path}: no such transcripts file or Lhotse manifest")
    root = os.path.dirname(os.path.abspath(path))
    out, seen = [], set()
    for where, rec in iter_jsonl(path, error=CorpusError):
        if not isinstance(rec, dict):
            raise CorpusError(f"{where}: expected a JSON object")
        for field in ("id", "audio", "text"):
            if not isinstance(rec.get(field), str):
                raise CorpusError(f"{where}: field {field!r} missing or not a string")
        if rec["id"] in seen:
            raise CorpusError(f"{where}: utterance id {rec['id']!r} appears again")
        seen.add(rec["id"])
        out.append(Utterance(rec["id"], os.path.join(root, rec["audio"]), rec["text"], rec["audio"]))
    return out, "jsonl"


def _read_lhotse(path: str) -> list[Utterance]:
    from megatron_slm.corpus.words import AlignmentError
    from megatron_slm.corpus.lhotse_manifests import cut_audio, read_manifest
    from megatron_slm.audio.sources import AudioSource

    out = []
    try:
        for e in read_manifest(path, need_recordings=True):
            audio = cut_audio(e)
            for j, sup in enumerate(getattr(e.cut, "supervisions", [])):
                if not sup.text or not sup.text.strip():
                    continue
                whole = sup.start <= 0 and sup.end >= e.cut.duration
                if whole:
                    src = audio
                elif isinstance(audio, str):
                    src = AudioSource(audio, e.cut.start + sup.start, sup.duration)
                else:  # a span of a span (or of a tar member): offsets add up
                    src = dataclasses.replace(audio, offset=audio.offset + max(sup.start, 0.0), duration=sup.duration)
                out.append(Utterance(sup.id, src, sup.text, getattr(src, "path", src),
                                     float(e.cut.start + max(sup.start, 0.0)), e.cut, j))
    except AlignmentError as err:
        raise CorpusError(str(err)) from None
    return out


def record(u: Utterance, result) -> dict:
    return {"id": u.id, "audio": u.audio_label, "text": u.text,
            "words": [{"word": w.word, "start": w.start, "end": w.end, "confidence": w.confidence} for w in result.words],
            "unaligned": [{"index": x.index, "word": x.word, "reason": x.reason} for x in result.unplaced]}


def write_lhotse(utterances: list[Utterance], records: dict[str, dict], out: str) -> int:
    """A CutSet with the aligned words of `records` (by utterance id); returns the cuts written."""
    from lhotse import CutSet, MonoCut, Recording, SupervisionSegment
    from lhotse.supervision import AlignmentItem

    def items(rec: dict, offset: float) -> list:
        return [AlignmentItem(w["word"], round(offset + w["start"], 5), round(w["end"] - w["start"], 5), w["confidence"])
                for w in rec["words"]]

    cuts: dict[str, object] = {}
    order = []
    for u in utterances:
        rec = records.get(u.id)
        if rec is None:
            continue
        if u.cut is None:  # a transcripts JSONL: one cut per recording file
            recording = Recording.from_file(u.audio, recording_id=u.id)
            sup = SupervisionSegment(u.id, u.id, 0.0, recording.duration, text=u.text,
                                     alignment={"word": items(rec, 0.0)})
            cuts[u.id] = MonoCut(u.id, 0.0, recording.duration, 0, recording=recording, supervisions=[sup])
            order.append(u.id)
            continue
        cut = cuts.get(u.cut.id)
        if cut is None:
            cut = cuts[u.cut.id] = u.cut
            order.append(u.cut.id)
        sup = cut.supervisions[u.supervision]
        sup.alignment = {**(sup.alignment or {}), "word": items(rec, u.offset)}
    tmp = out + ".tmp.jsonl.gz"
    CutSet.from_cuts(cuts[k] for k in order).to_file(tmp)
    os.replace(tmp, out)
    return len(order)


def read_done(path: str) -> dict[str, dict]:
    """Records of a partial output (a killed run's truncated last line is ignored)."""
    if not os.path.isfile(path):
        return {}
    return {rec["id"]: rec for _, rec in iter_jsonl(path, error=CorpusError, tolerate_truncated_tail=True)}


def dumps(rec: dict) -> str:
    return json.dumps(rec, ensure_ascii=False)
