"""Lhotse manifests as a corpus: utterances (id, audio, word alignment), and a custom field written back.

Inputs (`detect` tells which a path is):
  * a CutSet (`cuts.jsonl.gz` or `.jsonl`): one utterance per cut, id = cut id; its words are the
    `alignment["word"]` items of all its supervisions
  * a supervisions manifest (`*supervisions*.jsonl.gz`), with the recordings manifest beside it
    (the same name with `recordings`) when audio is needed: one utterance per supervision,
    id = supervision id, audio = the supervised span of the recording
  * a Lhotse Shar directory (`cuts.NNNNNN.jsonl.gz` + `recording.NNNNNN.tar`): one utterance per
    cut, its audio read from the tar shard

Times: Lhotse keeps word alignments in the time frame of the recording (truncating a cut leaves
them unshifted), so a word's time within an utterance is its alignment start minus the
utterance's offset in the recording. Relative audio paths resolve against the working
directory, as in Lhotse itself.

Audio is read through the recording: a cut of a single-channel file without transforms becomes
the file, or an `AudioSource` span of it (only the span is decoded); Shar audio is read from its
tar member; anything else (several channels or sources, transforms, mixed cuts, URLs) is
rendered by Lhotse.
"""
from __future__ import annotations

import dataclasses
import functools
import gzip
import io
import json
import os
import re
import tarfile
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np

from megatron_slm import fields
from megatron_slm.audio.sources import AUDIO_EXTENSIONS, AudioSource
from megatron_slm.corpus.words import AlignmentError

INSTALL_HINT = "reading Lhotse manifests needs the lhotse package: pip install 'megatron-slm[formats]'"
_SHAR_CUTS = re.compile(r"^cuts\.(\d+)\.jsonl(\.gz)?$")


def lhotse():
    try:
        import lhotse as mod
    except ImportError:
        raise AlignmentError(INSTALL_HINT, "invalid_alignment") from None
    return mod


@dataclasses.dataclass
class Entry:
    """One utterance of a manifest: a Lhotse cut (a supervision becomes a cut of its span)."""

    id: str
    where: str                  # "file:line" for messages
    cut: object                 # lhotse MonoCut (or another Cut type)
    tar: Optional[str] = None   # Shar: the tar shard holding the cut's audio


# ----------------------------------------------------------------------------- detection


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.name.endswith(".gz") else open(path, encoding="utf-8")


def _first_record(path: Path) -> object:
    try:
        with _open_text(path) as f:
            for line in f:
                if line.strip():
                    return json.loads(line)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, EOFError):
        return None
    return None


def shar_shards(path: str | os.PathLike) -> list[Path]:
    """The `cuts.NNNNNN.jsonl[.gz]` files of a Shar directory, in shard order ([] if none)."""
    p = Path(path)
    return sorted((q for q in p.iterdir() if _SHAR_CUTS.match(q.name)), key=lambda q: int(_SHAR_CUTS.match(q.name)[1]))


def detect(path: str | os.PathLike) -> Optional[str]:
    """'cuts', 'supervisions' or 'shar' when `path` is a Lhotse manifest; None otherwise."""
    p = Path(path)
    if p.is_dir():
        return "shar" if shar_shards(p) else None
    if not p.is_file():
        return None
    first = _first_record(p)
    if not isinstance(first, dict):
        return None
    if "supervisions" in first and ("recording" in first or "type" in first):
        return "cuts"
    if "recording_id" in first and "start" in first and "duration" in first:
        return "supervisions"
    if "sources" in first and "sampling_rate" in first:
        raise AlignmentError(f"{p}: a Lhotse recordings manifest holds no words; give the supervisions "
                             "manifest (the recordings one is found beside it) or a CutSet")
    return None


# ----------------------------------------------------------------------------- reading


def _records(path: Path, problems: Optional[list]) -> Iterator[tuple[str, dict]]:
    """(file:line, dict) of a JSONL[.gz] manifest; bad lines go to `problems` (or raise)."""
    try:
        f = _open_text(path)
        with f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                where = f"{path}:{lineno}"
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    _problem(problems, "malformed_json", f"{where}: not JSON ({e.msg})")
                    continue
                if not isinstance(obj, dict):
                    _problem(problems, "malformed_json", f"{where}: expected a JSON object")
                    continue
                yield where, obj
    except (OSError, EOFError, UnicodeDecodeError) as e:  # a truncated .gz, a non-UTF-8 line
        raise AlignmentError(f"{path}: unreadable Lhotse manifest ({e})") from None


def _problem(problems: Optional[list], reason: str, message: str) -> None:
    if problems is None:
        raise AlignmentError(message, reason)
    problems.append((reason, message))


def _deserialize(obj: dict, where: str, problems: Optional[list], cls: type, expected: str):
    """The Lhotse object of one manifest record if it is a `cls`, else None (the problem noted)."""
    from lhotse.serialization import deserialize_item

    try:
        item = deserialize_item(dict(obj))
    except Exception as e:  # lhotse raises KeyError/TypeError/ValueError/AssertionError on bad records
        _problem(problems, "invalid_alignment", f"{where}: not a Lhotse manifest record ({type(e).__name__}: {e})")
        return None
    if not isinstance(item, cls):
        _problem(problems, "invalid_alignment", f"{where}: expected {expected}")
        return None
    return item


def recordings_beside(supervisions: Path) -> Path:
    """The recordings manifest that Lhotse recipes write next to a supervisions manifest."""
    return supervisions.with_name(supervisions.name.replace("supervisions", "recordings"))


def read_manifest(path: str | os.PathLike, problems: Optional[list] = None,
                  need_recordings: bool = False) -> Iterator[Entry]:
    """The utterances of a Lhotse manifest, in manifest order. Malformed records are appended to
    `problems` as (reason, message), or raise AlignmentError when `problems` is None."""
    lhotse()
    from lhotse import MonoCut, SupervisionSegment
    from lhotse.cut import Cut

    p = Path(path)
    kind = detect(p)
    if kind is None:
        raise AlignmentError(f"{p}: not a Lhotse CutSet, supervisions manifest or Shar directory")
    if kind == "supervisions":
        recordings = None
        rec_path = recordings_beside(p)
        if rec_path != p and rec_path.is_file():
            from lhotse import load_manifest

            recordings = load_manifest(rec_path)
        elif need_recordings:
            raise AlignmentError(f"{p}: the audio of a supervisions manifest comes from its recordings manifest, "
                                 f"expected at {rec_path}")
        for where, obj in _records(p, problems):
            sup = _deserialize(obj, where, problems, SupervisionSegment, "a supervision segment")
            if sup is None:
                continue
            rec = None
            if recordings is not None:
                if sup.recording_id not in recordings:
                    _problem(problems, "invalid_alignment",
                             f"{where}: supervision {sup.id!r}: recording {sup.recording_id!r} is not in {rec_path}")
                    continue
                rec = recordings[sup.recording_id]
            # the supervision's span as a cut: its start is the utterance's offset in the recording
            cut = MonoCut(id=sup.id, start=sup.start, duration=sup.duration, channel=sup.channel,
                          recording=rec, supervisions=[sup.with_offset(-sup.start)])
            yield Entry(sup.id, where, cut)
        return
    files = shar_shards(p) if kind == "shar" else [p]
    for shard in files:
        tar = None
        if kind == "shar":
            tar = str(shard.with_name(f"recording.{_SHAR_CUTS.match(shard.name)[1]}.tar"))
        for where, obj in _records(shard, problems):
            cut = _deserialize(obj, where, problems, Cut, "a cut (a CutSet manifest)")
            if cut is None:
                continue
            yield Entry(cut.id, where, cut, tar)


# ----------------------------------------------------------------------------- words


def cut_words(entry: Entry) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(words, starts, ends) of an utterance in seconds from its start, unvalidated (the shared
    validator in corpus/words.py judges them). A cut without usable word alignments raises
    AlignmentError with the reason: no_supervision, no_word_alignment or unsupported_cut."""
    from lhotse import MonoCut

    cut, tag = entry.cut, f"{entry.where}: cut {entry.id!r}"
    if not isinstance(cut, MonoCut):
        raise AlignmentError(f"{tag} is a {type(cut).__name__}; word alignments are read from MonoCuts",
                             "unsupported_cut")
    if not cut.supervisions:
        raise AlignmentError(f"{tag} has no supervisions", "no_supervision")
    items = []
    for sup in sorted(cut.supervisions, key=lambda s: s.start):
        word = (sup.alignment or {}).get("word")
        if word is None:
            raise AlignmentError(f"{tag}: supervision {sup.id!r} has no alignment['word']", "no_word_alignment")
        items.extend(word)
    try:  # the shared field rules: numbers are numbers, words strings (never converted)
        starts = fields.numbers([a.start for a in items], tag, "alignment['word'].start")
        durations = fields.numbers([a.duration for a in items], tag, "alignment['word'].duration", lo=0)
        words = [fields.string(a.symbol, tag, "alignment['word'].symbol", empty=True).strip() for a in items]
    except fields.FieldError as e:
        raise AlignmentError(str(e)) from None
    starts = np.array(starts, dtype=np.float64)
    return words, starts - cut.start, starts + np.array(durations, dtype=np.float64) - cut.start


# ----------------------------------------------------------------------------- audio


class _TarMembers:
    """Byte ranges of a Shar tar's audio members by cut id (the headers are read once)."""

    _index: dict[str, dict[str, tuple[int, int]]] = {}

    @classmethod
    def read(cls, tar: str, cut_id: str) -> bytes:
        index = cls._index.get(tar)
        if index is None:
            index = {}
            with tarfile.open(tar) as tf:
                for m in tf.getmembers():
                    stem, ext = os.path.splitext(m.name)
                    if ext.lower() in AUDIO_EXTENSIONS:
                        index[stem] = (m.offset_data, m.size)
            cls._index[tar] = index
        if cut_id not in index:
            raise FileNotFoundError(f"{tar} holds no audio for cut {cut_id!r}")
        offset, size = index[cut_id]
        with open(tar, "rb") as f:
            f.seek(offset)
            return f.read(size)


def _render(cut) -> bytes:
    """A cut's audio as Lhotse produces it (any source, channels, transforms), as WAV bytes."""
    import soundfile as sf

    audio = cut.load_audio()  # [channels, samples] at the recording's rate
    buf = io.BytesIO()
    sf.write(buf, np.asarray(audio, dtype=np.float32).T, int(cut.sampling_rate), format="WAV", subtype="FLOAT")
    return buf.getvalue()


def _fail(message: str) -> bytes:
    raise OSError(message)


def cut_audio(entry: Entry):
    """What the units pipeline decodes for an utterance: a file path (the whole file), or an
    `AudioSource` (a span of a file, a Shar tar member, or audio rendered by Lhotse)."""
    from lhotse import MonoCut

    cut = entry.cut
    label = f"{entry.where}#{entry.id}"
    if entry.tar is not None:
        return AudioSource(f"{entry.tar}#{entry.id}", data=functools.partial(_TarMembers.read, entry.tar, entry.id))
    rec = getattr(cut, "recording", None)
    if not getattr(cut, "has_recording", False) or rec is None:
        return AudioSource(label, data=functools.partial(_fail, f"{entry.where}: cut {entry.id!r} has no recording"))
    simple = (isinstance(cut, MonoCut) and len(rec.sources) == 1 and not rec.transforms and rec.num_channels == 1
              and rec.sources[0].type in ("file", "memory"))
    if not simple:
        return AudioSource(label, data=functools.partial(_render, cut))
    src = rec.sources[0]
    whole = cut.start == 0 and abs(cut.duration - rec.duration) * rec.sampling_rate < 0.5
    if src.type == "file":
        path = os.path.abspath(src.source)
        return path if whole else AudioSource(path, float(cut.start), float(cut.duration))
    blob = src.source
    return AudioSource(label, 0.0 if whole else float(cut.start), None if whole else float(cut.duration),
                       data=lambda: blob)


def audio_inputs(path: str | os.PathLike) -> tuple[list, list[str]]:
    """(audio inputs for the units pipeline, utterance ids) of every utterance of a manifest.
    A malformed record raises AlignmentError naming its file:line."""
    inputs, ids = [], []
    for e in read_manifest(path, need_recordings=True):
        inputs.append(cut_audio(e))
        ids.append(e.id)
    return inputs, ids


# ----------------------------------------------------------------------------- writing back


def write_field(manifest: str, field: str, value_of: Callable[[str], Optional[dict]], out: str) -> dict:
    """Attach `value_of(utterance id)` (None: nothing) to the manifest's cuts as the custom field
    `field` and write them: a CutSet `out` (`.jsonl.gz`) for a CutSet or supervisions manifest;
    for a Shar directory, Shar field shards `out/<field>.NNNNNN.jsonl.gz` that go next to its
    other shards. Each file is written whole, then renamed. Returns {"cuts", "with_field"}."""
    lhotse()
    from lhotse import CutSet

    counts = {"cuts": 0, "with_field": 0}
    if detect(manifest) == "shar":
        os.makedirs(out, exist_ok=True)
        for shard in shar_shards(manifest):
            index = _SHAR_CUTS.match(shard.name)[1]
            dst = os.path.join(out, f"{field}.{index}.jsonl.gz")
            with gzip.open(dst + ".tmp", "wt", encoding="utf-8") as f:
                for where, obj in _records(shard, None):
                    value = value_of(str(obj.get("id")))
                    line = {"cut_id": obj.get("id")}
                    if value is not None:  # a line without the field is Shar's placeholder
                        line[field] = value
                        counts["with_field"] += 1
                    counts["cuts"] += 1
                    f.write(json.dumps(line) + "\n")
            os.replace(dst + ".tmp", dst)
        return counts
    tmp = out + ".tmp.jsonl.gz"
    with CutSet.open_writer(tmp) as writer:
        for e in read_manifest(manifest, need_recordings=True):
            value = value_of(e.id)
            cut = e.cut
            if value is not None:
                cut = cut.with_custom(field, value)
                counts["with_field"] += 1
            counts["cuts"] += 1
            writer.write(cut)
    os.replace(tmp, out)
    return counts
