"""The document layout: segments of text and speech -> token ids, loss mask and modality.

Every sequence the model reads is laid out here: training documents (preprocessing and the
dynamic drawer), eval candidates, generation prompts and, built the same way, preference pairs.

    mk = Markers.of(vocab)                                   # <speech>, <text>, BOS, EOD ids
    doc = layout([speech(vocab, [12, 7]), text(vocab, "once upon", after_speech=True)], mk)
    doc.ids, doc.loss_mask, doc.modality

The layout, ids from left to right:

  BOS       when `markers.bos` is set (`document_bos` says when a training document has one).
  markers   `<speech>` / `<text>` before the first segment and at every switch of modality,
            when the document is interleaved; a document of one modality (speech-only and
            text-only training documents, a same-modality prompt and continuation) has none.
            `interleaved=None` decides by the segments (and `next_modality`); interleaved
            training documents pass True, so an all-text draw still starts with `<text>`.
  segments  their ids, back to back (two text segments in a row get no marker between them).
            Text: every word keeps its leading space. In interleaved training data the words
            are tokenised one by one (`first_word_spaced`: SlamKit's stored words all carry
            one; under `none` the first word of a document has none); a text string that
            follows speech gets a space unless it starts with one (`text`). Speech: unit ids
            from `vocab.unit_ids`; a [frames, n_q] array of multi-codebook frames is mapped
            the same way and flattened frame by frame (c0..c(n_q-1) of frame 0, then frame 1).
            A speech segment may be empty (SlamKit keeps the marker of a span without units:
            `keep_empty_speech`).
  next      `next_modality`: the marker of the modality that follows when it differs from the
            last segment's (a generation prompt continued in the other modality ends with it).
  end       `end=True`: EOD (the tokenizer's EOS), closing a training document or a completion.

`loss_mask` marks the ids of segments with `loss=True`, and the end id when the last segment has
it: an eval candidate after its prompt, a preference pair's completion and its EOS. BOS and
markers are never in it (pretraining learns every id anyway: samples.make_sample decides from
the labels). `modality` is 0 for text, 1 for speech, 2 for BOS, markers and EOD.

`assemble_runs` is the batch form of the same layout for interleaved training documents (many
documents of runs read from one id array, with array operations): preprocessing and the dynamic
drawer use it, and a test checks it equals `layout` run by run.

The two conventions (megatron_slm/conventions.py) differ in three layout rules, given by
`first_word_spaced`, `keep_empty_speech` and `document_bos`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from megatron_slm import conventions

SPEECH, TEXT = "speech", "text"
MODALITY = {TEXT: 0, SPEECH: 1}   # the vocabulary's MODALITY_TEXT / MODALITY_SPEECH
OTHER = 2                          # BOS, markers, EOD


class LayoutError(ValueError):
    """A tokenizer whose special tokens cannot give the requested layout."""


@dataclass(frozen=True)
class Markers:
    """The ids the layout adds around segments (bos None: documents without BOS)."""
    speech: int
    text: int
    bos: Optional[int]
    eod: int

    @classmethod
    def of(cls, vocab, bos: bool = True) -> "Markers":
        return cls(speech=vocab.speech_id, text=vocab.text_id, bos=vocab.bos if bos else None, eod=vocab.eod)

    def marker(self, modality: str) -> int:
        return self.speech if modality == SPEECH else self.text


@dataclass(frozen=True)
class Segment:
    """Vocabulary ids of one modality, and whether they are learned / scored."""
    modality: str           # SPEECH | TEXT
    ids: np.ndarray         # int64
    loss: bool = True


@dataclass
class Document:
    ids: np.ndarray         # int64
    loss_mask: np.ndarray   # bool, one per id
    modality: np.ndarray    # int8, one per id: 0 text, 1 speech, 2 BOS/marker/EOD

    @property
    def first_scored(self) -> int:
        """Index of the first id in the loss mask (len(ids) when none is)."""
        hit = np.flatnonzero(self.loss_mask)
        return int(hit[0]) if len(hit) else len(self.ids)


# ----------------------------------------------------------------------------- the conventions


def first_word_spaced(rule: str) -> bool:
    """Whether the first word of an interleaved document is tokenised with its leading space
    (slamkit: SlamKit stores every word with one) or without (none)."""
    return rule == conventions.SLAMKIT


def keep_empty_speech(rule: str) -> bool:
    """Whether a drawn speech span that owns no unit keeps its <speech> marker with nothing after
    it (slamkit) or turns back into text (none)."""
    return rule == conventions.SLAMKIT


def document_bos(vocab, add_bos: bool, rule: str) -> bool:
    """Whether interleaved training documents start with BOS: slamkit, only where the tokenizer
    adds one (SlamKit tokenises with add_special_tokens=True); none, whenever it has one.
    LayoutError for a tokenizer that adds other specials than BOS before and EOS after."""
    if not add_bos or vocab.bos is None:
        return False
    if rule != conventions.SLAMKIT:
        return True
    before, after = vocab.added_specials()
    if before not in ([], [vocab.bos]) or after not in ([], [vocab.eod]):
        raise LayoutError(f"tokenizer {vocab.source}: it adds {before} before and {after} after the text; "
                          f"compat=slamkit supports BOS before and EOS after only")
    return before == [vocab.bos]


# ----------------------------------------------------------------------------- segments


def text(vocab, value: str, after_speech: bool = False, loss: bool = True) -> Segment:
    """A text segment from a string; after speech it gets a leading space unless it has one (as
    words keep theirs in interleaved documents). The caller checks for an empty result."""
    spaced = after_speech and not value[:1].isspace()
    return Segment(TEXT, np.asarray(vocab.encode_text(" " + value if spaced else value), dtype=np.int64), loss)


def speech(vocab, units, loss: bool = True) -> Segment:
    """A speech segment from units ([n], or [frames, n_q] multi-codebook frames, flattened frame
    by frame after `vocab.unit_ids` maps them)."""
    return Segment(SPEECH, np.asarray(vocab.unit_ids(np.asarray(units, dtype=np.int64)), dtype=np.int64).reshape(-1),
                   loss)


def ids(modality: str, values, loss: bool = True) -> Segment:
    """A segment of ids already in the vocabulary (e.g. words tokenised with their spaces)."""
    return Segment(modality, np.asarray(values, dtype=np.int64).reshape(-1), loss)


# ----------------------------------------------------------------------------- one document


def is_interleaved(segments: Sequence[Segment], next_modality: Optional[str] = None) -> bool:
    """More than one modality among the segments and the one that follows them."""
    return len({s.modality for s in segments} | ({next_modality} if next_modality else set())) > 1


def layout(segments: Sequence[Segment], markers: Markers, interleaved: Optional[bool] = None,
           next_modality: Optional[str] = None, end: bool = False) -> Document:
    """One document (see the module docstring)."""
    if interleaved is None:
        interleaved = is_interleaved(segments, next_modality)
    parts: list[np.ndarray] = []
    loss: list[np.ndarray] = []
    mods: list[np.ndarray] = []

    def add(values: np.ndarray, scored: bool, modality: int) -> None:
        parts.append(values)
        loss.append(np.full(len(values), scored))
        mods.append(np.full(len(values), modality, dtype=np.int8))

    if markers.bos is not None:
        add(np.array([markers.bos], dtype=np.int64), False, OTHER)
    prev = None
    for seg in segments:
        if interleaved and seg.modality != prev:
            add(np.array([markers.marker(seg.modality)], dtype=np.int64), False, OTHER)
        add(np.asarray(seg.ids, dtype=np.int64), seg.loss, MODALITY[seg.modality])
        prev = seg.modality
    if interleaved and next_modality is not None and next_modality != prev:
        add(np.array([markers.marker(next_modality)], dtype=np.int64), False, OTHER)
    if end:
        add(np.array([markers.eod], dtype=np.int64), bool(segments) and segments[-1].loss, OTHER)
    if not parts:
        return Document(np.zeros(0, np.int64), np.zeros(0, bool), np.zeros(0, np.int8))
    return Document(np.concatenate(parts), np.concatenate(loss), np.concatenate(mods))


def training_document(segments: Sequence[Segment], markers: Markers, interleaved: bool) -> np.ndarray:
    """The ids of a training document: [BOS] segments EOD (interleaved: with markers)."""
    return layout(segments, markers, interleaved=interleaved, end=True).ids


# ----------------------------------------------------------------------------- many documents at once


def assemble_runs(source: np.ndarray, counts: np.ndarray, src: np.ndarray, length: np.ndarray, speech: np.ndarray,
                  markers: Markers) -> tuple[np.ndarray, np.ndarray]:
    """(documents' ids concatenated, document offsets) of interleaved training documents made of
    runs, laid out as `training_document(..., interleaved=True)`: document d has the next
    counts[d] runs; run r is a modality run (speech[r]) of ids source[src[r]:src[r]+length[r]]
    (empty runs keep their marker). `source` may be a memory map: only the runs' ids are read.
    This runs once per training sample of dynamic data, so it is a fixed, small number of array
    operations: the run ids fill every position that is not a BOS, marker or EOD, in order."""
    counts = np.asarray(counts, dtype=np.int64)
    length = np.asarray(length, dtype=np.int64)
    D, R, has_bos = len(counts), len(length), int(markers.bos is not None)
    ends = np.cumsum(length)
    before = ends - length                                  # run ids before each run
    runs_to = np.cumsum(counts)                             # runs up to each document's end
    run_doc = np.repeat(np.arange(D), counts)
    # a run's marker comes after the ids, markers, BOS and EOD of everything before it
    marker_at = before + np.arange(R) + run_doc * (1 + has_bos) + has_bos
    ids_to = np.zeros(D, dtype=np.int64)                    # run ids up to each document's end
    some = runs_to > 0
    ids_to[some] = ends[runs_to[some] - 1]
    offsets = np.zeros(D + 1, dtype=np.int64)
    offsets[1:] = ids_to + runs_to + np.arange(1, D + 1) * (1 + has_bos)
    out = np.empty(int(offsets[-1]), dtype=np.int64)
    content = np.ones(len(out), dtype=bool)
    content[marker_at] = False
    content[offsets[1:] - 1] = False
    if has_bos:
        content[offsets[:-1]] = False
        out[offsets[:-1]] = markers.bos
    out[content] = source[np.repeat(np.asarray(src, dtype=np.int64) - before, length) + np.arange(int(ends[-1]) if R else 0)]
    out[marker_at] = np.where(speech, markers.speech, markers.text)
    out[offsets[1:] - 1] = markers.eod
    return out, offsets
