"""Prompts from every source (real corpus files, real audio decoding), cut at word boundaries,
laid out like training documents; corrupt records skipped and counted, bad input refused."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from megatron_slm.corpus.alignments import AlignmentIndex
from megatron_slm.generate.prompts import (Prompt, Segment, check_unit_identity, cut_units, encode_prompt,
                                           read_audio_prompts, read_prompt_file, read_text_prompts, select)
from megatron_slm.generate.sampling import GenerationError
from megatron_slm.testing.tiny_slm import CORPUS, TOKENIZER
from megatron_slm.units.records import compatibility_key, iter_records, read_meta
from megatron_slm.vocab import SpeechVocab

K = 100


@pytest.fixture(scope="module")
def vocab():
    return SpeechVocab.from_pretrained(TOKENIZER, num_units=K)


def test_cut_keeps_the_runs_ending_by_the_closest_word_end():
    units, durations = [5, 6, 7, 8, 9], [2, 3, 1, 4, 2]        # run ends at 0.08 0.2 0.24 0.4 0.48 s
    assert cut_units(units, durations, 0.04, 0.25) == ([5, 6, 7], 0.25)
    # words end at 0.19 and 0.41: 0.41 is closer to 0.32 than 0.19 -> runs ending by 0.41
    assert cut_units(units, durations, 0.04, 0.32, word_ends=[0.19, 0.41]) == ([5, 6, 7, 8], 0.41)
    assert cut_units(units, durations, 0.04, 0.28, word_ends=[0.19, 0.41]) == ([5], 0.19)


def test_unit_file_prompts_cut_at_a_word_end_of_the_corpus():
    al = AlignmentIndex(CORPUS / "alignments.jsonl")
    ps = read_prompt_file(str(CORPUS / "units.jsonl"), seconds=3.0, alignments=al)
    full = {r.id: r for r in iter_records(CORPUS / "units.jsonl")}
    assert len(ps.prompts) == len(full) == 43 and ps.skipped.total == 0
    assert ps.unit_identity == compatibility_key(read_meta(CORPUS / "units.jsonl"))
    p = ps.prompts[0]
    assert p.id == "s01_01" and p.seconds == pytest.approx(3.087)  # "little" ends at 3.087 s, the closest to 3
    rec = full["s01_01"]
    ends = np.cumsum(rec.durations) * rec.unit_seconds
    n = len(p.segments[0].units)
    assert p.segments[0].units == rec.units[:n] and ends[n - 1] <= 3.087 < ends[n]
    exact = read_prompt_file(str(CORPUS / "units.jsonl"), seconds=3.0)
    assert exact.prompts[0].seconds == 3.0 and len(exact.prompts[0].segments[0].units) <= n


def test_corrupt_records_are_skipped_and_counted(tmp_path):
    src = CORPUS / "units.jsonl"
    lines = src.read_text().splitlines()
    bad = tmp_path / "units.jsonl"
    broken = json.loads(lines[2])
    del broken["durations"]
    bad.write_text("\n".join([lines[0], "{not json", lines[1], json.dumps(broken), lines[1], *lines[3:6]]) + "\n")
    shutil.copy(str(src) + ".meta.json", str(bad) + ".meta.json")
    ps = read_prompt_file(str(bad))
    assert [p.id for p in ps.prompts] == ["s01_01", "s01_02", "s01_04", "s01_05", "s01_06"]
    assert dict(ps.skipped.counts) == {"malformed_json": 1, "invalid_units": 1, "duplicate_id": 1}
    assert any(f"{bad}:2" in e for e in ps.skipped.examples)
    (tmp_path / "nometa.jsonl").write_text(lines[0] + "\n")
    with pytest.raises(GenerationError, match="identity sidecar missing"):
        read_prompt_file(str(tmp_path / "nometa.jsonl"))


def test_text_and_segment_prompts(tmp_path, vocab):
    t = tmp_path / "stories.txt"
    t.write_text("Once upon a time\n\n  a little girl  \n")
    ps = read_text_prompts(str(t))
    assert [(p.id, p.segments[0].text) for p in ps.prompts] == [("stories:1", "Once upon a time"),
                                                                ("stories:3", "a little girl")]
    seg = tmp_path / "seg.jsonl"
    seg.write_text(json.dumps({"id": "p1", "segments": [{"text": "Once upon"}, {"units": [3, 4, 5]}]}) + "\n"
                   + json.dumps({"id": "p2", "segments": [{"units": "x"}]}) + "\n")
    ps = read_prompt_file(str(seg))
    assert [p.id for p in ps.prompts] == ["p1"] and ps.skipped.counts["invalid_units"] == 1
    assert ps.prompts[0].modalities == ["text", "speech"] and ps.unit_identity is None
    seg.write_text(json.dumps({"id": "p3", "segments": [{"modality": "video", "text": "x"}]}) + "\n")
    with pytest.raises(GenerationError, match=r"seg.jsonl:1: segments\[0\].modality is 'video'"):
        read_prompt_file(str(seg))


def test_prompts_are_laid_out_like_training_documents(vocab):
    bos, S, T, U = vocab.bos, vocab.speech_id, vocab.text_id, vocab.unit_offset
    speech = Prompt("a", [Segment("speech", units=[1, 2])], "x")
    text = Prompt("b", [Segment("text", text="Once upon")], "x")
    t_ids = vocab.encode_text("Once upon")
    assert encode_prompt(speech, vocab, "speech") == [bos, U + 1, U + 2]          # speech-only document
    assert encode_prompt(speech, vocab, "text") == [bos, S, U + 1, U + 2, T]      # S -> T
    assert encode_prompt(text, vocab, "text") == [bos, *t_ids]
    assert encode_prompt(text, vocab, "speech") == [bos, T, *t_ids, S]            # T -> S
    mixed = Prompt("c", [Segment("speech", units=[7]), Segment("text", text="upon")], "x")
    # text after speech keeps the leading space a word has inside an interleaved document
    assert encode_prompt(mixed, vocab, "speech") == [bos, S, U + 7, T, *vocab.encode_text(" upon"), S]
    assert encode_prompt(mixed, vocab, "any") == [bos, S, U + 7, T, *vocab.encode_text(" upon")]


def test_bad_prompts_are_refused(vocab, tmp_path):
    with pytest.raises(GenerationError, match=r"holds unit 100, outside \[0, 100\)"):
        encode_prompt(Prompt("u", [Segment("speech", units=[3, 100])], "f:1"), vocab, "speech")
    with pytest.raises(GenerationError, match="is empty.*try a larger --prompt-seconds"):
        encode_prompt(Prompt("e", [Segment("speech", units=[])], "f:2", seconds=0.1), vocab, "speech")
    with pytest.raises(GenerationError, match="is empty"):
        encode_prompt(Prompt("e", [], "f:3"), vocab, "speech")
    ps = read_prompt_file(str(CORPUS / "units.jsonl"))
    other = dict(ps.unit_identity, sha256="0" * 64)
    with pytest.raises(GenerationError, match="different extractor.*sha256"):
        check_unit_identity(ps, other, K)
    with pytest.raises(GenerationError, match="k=100 extractor but the model vocabulary has 500 units"):
        check_unit_identity(ps, None, 500)
    check_unit_identity(ps, ps.unit_identity, K)
    with pytest.raises(GenerationError, match="no prompt with id 'nope'"):
        select(ps, ["s01_02", "nope"])
    assert [p.id for p in select(read_prompt_file(str(CORPUS / "units.jsonl")), ["s02_01", "s01_02"]).prompts] == \
        ["s02_01", "s01_02"]


def test_audio_prompts_go_through_the_unit_pipeline(tmp_path):
    from megatron_slm.units.pipeline import UnitExtractor

    audio = tmp_path / "audio"
    audio.mkdir()
    for name in ("s01_01.flac", "s01_02.flac"):
        shutil.copy(CORPUS / "audio" / name, audio / name)
    (audio / "broken.wav").write_bytes(b"RIFF....not audio")
    ex = UnitExtractor.from_args(extractor="mel", kmeans=str(CORPUS / "km_mel100.npy"), device="cpu",
                                 audio_backend="soundfile")
    al = AlignmentIndex(CORPUS / "alignments.jsonl")
    ps = read_audio_prompts([str(audio)], ex, seconds=3.0, alignments=al)
    assert [p.id for p in ps.prompts] == ["s01_01", "s01_02"]
    assert ps.skipped.counts["unreadable_audio"] == 1
    # the corpus' units file was made by the same extractor and codebook
    assert ps.unit_identity == compatibility_key(read_meta(CORPUS / "units.jsonl"))
    full = next(r for r in iter_records(CORPUS / "units.jsonl") if r.id == "s01_01")
    got = ps.prompts[0].segments[0].units
    assert ps.prompts[0].seconds == pytest.approx(3.087) and len(got) > 20
    assert np.mean(np.asarray(got) == np.asarray(full.units[:len(got)])) > 0.9
