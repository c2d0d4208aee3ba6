"""The one document layout: golden ids per convention, the batch form against the per-document
form, and the callers (preprocessing, dynamic drawing, eval, generation) giving the same ids."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from megatron_slm import document as dl
from megatron_slm.vocab import SpeechVocab

REPO = Path(__file__).resolve().parent.parent
TOKENIZER = REPO / "examples" / "tokenizer" / "tiny-bpe"
# tiny-bpe: V=512, BOS 0, EOS 1; K=100 units at 512..611, <speech> 612, <text> 613
BOS, EOD, U, S, T = 0, 1, 512, 612, 613


@pytest.fixture(scope="module")
def vocab():
    return SpeechVocab.from_pretrained(TOKENIZER, num_units=100)


def test_layout_of_one_document(vocab):
    mk = dl.Markers.of(vocab)
    assert (mk.speech, mk.text, mk.bos, mk.eod) == (S, T, BOS, EOD)
    once_upon = vocab.encode_text("once upon")
    spaced = vocab.encode_text(" once upon")
    assert once_upon != spaced
    # one modality: no markers
    doc = dl.layout([dl.speech(vocab, [3, 4])], mk)
    assert doc.ids.tolist() == [BOS, U + 3, U + 4]
    assert doc.modality.tolist() == [2, 1, 1] and doc.loss_mask.tolist() == [False, True, True]
    # speech then text: markers, the text gets its leading space; the prompt is not scored
    doc = dl.layout([dl.speech(vocab, [5], loss=False), dl.text(vocab, "once upon", after_speech=True)], mk, end=True)
    assert doc.ids.tolist() == [BOS, S, U + 5, T, *spaced, EOD]
    assert doc.loss_mask.tolist() == [False] * 4 + [True] * len(spaced) + [True]
    assert doc.first_scored == 4
    # a continuation in the other modality ends with its marker; same modality in a row: no marker
    doc = dl.layout([dl.text(vocab, "once"), dl.text(vocab, " upon")], mk, next_modality=dl.SPEECH)
    assert doc.ids.tolist() == [BOS, T, *vocab.encode_text("once"), *vocab.encode_text(" upon"), S]
    # interleaved training documents always carry markers, even of one modality; no BOS when unset
    no_bos = dl.Markers.of(vocab, bos=False)
    assert dl.training_document([dl.ids(dl.TEXT, [7, 8])], no_bos, interleaved=True).tolist() == [T, 7, 8, EOD]
    assert dl.training_document([dl.ids(dl.TEXT, [7, 8])], mk, interleaved=False).tolist() == [BOS, 7, 8, EOD]


def test_multi_codebook_frames_flatten_frame_by_frame():
    class TwoCodebooks:  # codebook q of K=10 codes owns units [10q, 10q+10), ids from 100
        def unit_ids(self, codes):
            return np.asarray(codes) + np.arange(codes.shape[1]) * 10 + 100

    seg = dl.speech(TwoCodebooks(), np.array([[1, 2], [3, 4], [5, 6]]))  # 3 frames of n_q=2
    assert seg.ids.tolist() == [101, 112, 103, 114, 105, 116]


def test_batch_form_equals_layout():
    """`assemble_runs` (many documents of maximal runs) gives `layout` of each document."""
    rng = np.random.default_rng(0)
    source = rng.integers(0, 500, size=400)
    for mk in (dl.Markers(612, 613, 0, 1), dl.Markers(612, 613, None, 1)):
        counts = rng.integers(1, 5, size=30)
        R = int(counts.sum())
        src, length = rng.integers(0, 300, R), rng.integers(0, 6, R)
        first = np.repeat(rng.random(len(counts)) < 0.5, counts)  # runs alternate within a document
        speech = first ^ ((np.arange(R) - np.repeat(np.cumsum(counts) - counts, counts)) % 2 == 1)
        out, offsets = dl.assemble_runs(source, counts, src, length, speech, mk)
        r = 0
        for d, c in enumerate(counts):
            segs = [dl.ids(dl.SPEECH if speech[i] else dl.TEXT, source[src[i]:src[i] + length[i]]) for i in range(r, r + c)]
            r += c
            assert out[offsets[d]:offsets[d + 1]].tolist() == dl.training_document(segs, mk, interleaved=True).tolist()
