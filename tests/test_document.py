"""The one document layout: golden ids per convention, the batch form against the per-document
form, and the callers (preprocessing, dynamic drawing, eval, generation) giving the same ids."""
from __future__ import annotations

import numpy as np
import pytest

from megatron_slm import document as dl
from megatron_slm.vocab import SpeechVocab

from conftest import CORPUS, TOKENIZER

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


# "once upon a time"; words 0 and 1 own unit runs [7, 8] and [9], words 2 and 3 none. Hand-checked
# ids of tiny-bpe: once = 275 68 70, " once" = 323 68 70, " upon" = 427 275, " a" = 260, " time" = 499.
# Under slamkit every word keeps its leading space and a unit-less speech span keeps its marker;
# under none the first word has no space and a unit-less span turns back into text.
GOLDEN_LAYOUT = {
    "slamkit": {(0, 1, 0, 0): [BOS, T, 323, 68, 70, S, U + 9, T, 260, 499, EOD],
                (0, 0, 1, 0): [BOS, T, 323, 68, 70, 427, 275, S, T, 499, EOD]},
    "none": {(0, 1, 0, 0): [BOS, T, 275, 68, 70, S, U + 9, T, 260, 499, EOD],
             (0, 0, 1, 0): [BOS, T, 275, 68, 70, 427, 275, 260, 499, EOD]},
}


@pytest.mark.parametrize("rule", sorted(GOLDEN_LAYOUT))
def test_golden_interleaved_document_per_convention(vocab, rule):
    from megatron_slm.data import interleave

    ids, owner = vocab.encode_words_flat(["once", "upon", "a", "time"], first_spaced=dl.first_word_spaced(rule))
    u = interleave.prepare_flat(0, ids, owner, vocab.unit_ids([7, 8, 9]), np.array([0, 2, 3, 3]), np.array([2, 3, 3, 3]))
    mk = dl.Markers.of(vocab, bos=dl.document_bos(vocab, True, rule))
    for mask, want in GOLDEN_LAYOUT[rule].items():
        mask = np.array(mask, dtype=bool)
        assert interleave.assemble(u, mask, mk, keep_empty=dl.keep_empty_speech(rule)).tolist() == want
        batch = interleave.PreparedBatch.from_utterances([u])
        runs = interleave.batch_runs(batch, mask, keep_empty=dl.keep_empty_speech(rule))
        assert interleave.assemble_batch(batch, runs, mk)[0].tolist() == want


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


@pytest.mark.parametrize("rule", ["slamkit", "none"])
def test_every_caller_lays_out_the_same_segments_alike(tmp_path, vocab, rule):
    """The segments of drawn interleaved documents, given to preprocessing (static), the dynamic
    drawer (epoch 0), generation (as a prompt) and eval (first two runs as prompt + candidate),
    give the same ids; speech-only documents likewise."""
    import json

    from megatron_slm.config import InterleaveConfig
    from megatron_slm.corpus.alignments import AlignmentIndex
    from megatron_slm.corpus.words import validate
    from megatron_slm.data import dynamic_index, interleave
    from megatron_slm.data.prepare import prepare_interleaved
    from megatron_slm.data.preprocess import PreprocessJob, run
    from megatron_slm.data.storage import StoredDataset
    from megatron_slm.eval.items import Candidate
    from megatron_slm.eval.scoring import encode_candidate
    from megatron_slm.generate.prompts import Prompt, Segment, encode_prompt

    corpus = CORPUS
    cfg = InterleaveConfig(compat=rule, allow_mixed_compat=rule == "none")
    stored = {}
    for mode in ("static", "dynamic"):
        job = PreprocessJob(kind="interleaved", tokenizer=str(TOKENIZER), out_prefix=str(tmp_path / mode), progress=False,
                            inputs=[str(corpus / "units.jsonl")], alignments=str(corpus / "alignments.jsonl"), mode=mode,
                            interleave=cfg, seed=5)
        run(job)
        stored[mode] = StoredDataset(str(tmp_path / mode), vocab, "interleaved")
    speech_job = PreprocessJob(kind="speech", tokenizer=str(TOKENIZER), out_prefix=str(tmp_path / "speech"),
                               progress=False, inputs=[str(corpus / "units.jsonl")])
    run(speech_job)
    speech_docs = StoredDataset(str(tmp_path / "speech"), vocab, "speech")
    mk = dl.Markers.of(vocab, bos=stored["static"].meta["add_bos"])
    assert mk.bos == BOS  # tiny-bpe adds BOS: both conventions start documents with it, as eval and generation do
    drawer = dynamic_index.Drawer(stored["dynamic"], cfg, 5, mk)
    counts, src, length, speech = drawer.draw_epoch(np.arange(len(stored["dynamic"])), 0)[1]
    table = dynamic_index.RunTable(np.r_[0, np.cumsum(counts, dtype=np.int64)], src, length, speech, stored["dynamic"], mk)

    align = AlignmentIndex(str(corpus / "alignments.jsonl"))
    records = [json.loads(line) for line in (corpus / "units.jsonl").read_text().splitlines() if line.strip()]
    cross = 0
    for d, obj in enumerate(records):
        u, rec = prepare_interleaved(obj, f"units.jsonl:{d + 1}", vocab, align, rule)
        words = validate(align.get(rec.id), rec.audio_seconds).words
        runs = interleave.effective_runs(u, interleave.draw(u, cfg, 5, 0), dl.keep_empty_speech(rule))
        static = stored["static"].get(d).astype(np.int64)
        assert np.array_equal(table.assemble(np.array([d]))[0], static)                      # dynamic drawing
        # the same runs as prompt segments: text as strings with the words' spaces, speech as units
        segs = []
        for a, b, is_speech in runs:
            if is_speech:
                segs.append(Segment("speech", units=(u.unit_ids[u.lo[a]:max(u.hi[b - 1], u.lo[a])] - U).tolist()))
            else:
                # after speech the layout adds the leading space; a document's first word has one under slamkit
                first = " " if a == 0 and dl.first_word_spaced(rule) else ""
                segs.append(Segment("text", text=first + " ".join(words[a:b])))
        if any(s.modality == "speech" and not s.units for s in segs):
            continue  # a unit-less span kept as a bare marker: no prompt can hold it
        ids = [dl.speech(vocab, s.units) if s.units else dl.text(vocab, s.text, after_speech=i > 0) for i, s in enumerate(segs)]
        assert np.array_equal(dl.training_document(ids, mk, interleaved=True), static)    # the layout itself
        if len({s.modality for s in segs}) > 1:
            assert encode_prompt(Prompt(rec.id, segs, "t"), vocab, "any") == static[:-1].tolist()  # generation
            cand = [Candidate(units=s.units) if s.modality == "speech" else Candidate(text=s.text) for s in segs[:2]]
            enc = encode_candidate(cand[1], cand[0], vocab)                                 # eval
            assert np.array_equal(enc.tokens, static[:len(enc.tokens)])
            assert enc.tokens[enc.score_from - 1] == (S if segs[1].modality == "speech" else T)
            cross += 1
        # speech-only: preprocessing, eval (no prompt) and generation
        plain = speech_docs.get(d).astype(np.int64)
        assert encode_prompt(Prompt(rec.id, [Segment("speech", units=list(rec.units))], "t"), vocab, "speech") \
            == plain[:-1].tolist() == encode_candidate(Candidate(units=list(rec.units)), None, vocab).tokens.tolist()
    assert cross >= 10

