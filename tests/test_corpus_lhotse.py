"""Lhotse in and out: a CutSet, a recordings + supervisions pair and a Shar directory built with
lhotse from the bundled corpus give the same units and byte-identical datasets as its JSONL;
cuts of a long recording decode only their span; cuts without word alignments are counted;
units go back into the cuts."""
import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import CORPUS, TOKENIZER

lhotse = pytest.importorskip("lhotse")

from megatron_slm.commands import extract_units, preprocess_data  # noqa: E402
from megatron_slm.corpus.alignments import AlignmentIndex  # noqa: E402
from megatron_slm.corpus.words import AlignmentError, validate  # noqa: E402
from megatron_slm.corpus.lhotse_manifests import audio_inputs  # noqa: E402
from megatron_slm.units.lhotse_export import UNITS_FIELD, write_units  # noqa: E402
from megatron_slm.data.storage import content_hash  # noqa: E402
from megatron_slm.testing.lhotse_corpus import corpus_cuts, write_manifests  # noqa: E402
from megatron_slm.audio.decode_soundfile import load_audio  # noqa: E402
from megatron_slm.audio.sources import AudioSource  # noqa: E402
from megatron_slm.units.records import iter_records  # noqa: E402

ALIGN = str(CORPUS / "alignments.jsonl")
UNITS = str(CORPUS / "units.jsonl")
KM = str(CORPUS / "km_mel100.npy")


@pytest.fixture(scope="module")
def manifests(tmp_path_factory):
    """The corpus as Lhotse manifests, plus two cuts that have no word alignments."""
    from lhotse import MonoCut, SupervisionSegment

    cuts = corpus_cuts(ALIGN)
    rec = cuts[0].recording
    cuts.append(MonoCut(id="no_sup", start=0.0, duration=rec.duration, channel=0, recording=rec))
    sup = SupervisionSegment(id="no_words", recording_id=rec.id, start=0.0, duration=rec.duration, text="a text")
    cuts.append(MonoCut(id="no_words", start=0.0, duration=rec.duration, channel=0, recording=rec, supervisions=[sup]))
    return write_manifests(cuts, tmp_path_factory.mktemp("lhotse"))


def _units(path):
    return {r.id: (r.units, r.durations, r.num_frames, r.audio_seconds) for r in iter_records(path)}


def _interleaved(units, alignments, prefix, *extra):
    assert preprocess_data.main(["interleaved", "--tokenizer", str(TOKENIZER), "--units", str(units), "--alignments",
                                 str(alignments), "--out-prefix", str(prefix), "--quiet", *extra]) == 0
    return json.loads(Path(f"{prefix}.meta.json").read_text())


def test_cutset_shar_and_supervisions_match_the_jsonl_corpus(manifests, tmp_path, capsys):
    ref_units = _units(UNITS)
    ref = _interleaved(UNITS, ALIGN, tmp_path / "jsonl")
    for kind in ("cuts", "shar", "supervisions"):
        out = tmp_path / f"units_{kind}.jsonl"
        assert extract_units.main(["--alignments", manifests[kind], "--extractor", "mel", "--kmeans", KM,
                                   "--out", str(out), "--audio-backend", "soundfile"]) == 0
        got = _units(out)
        extra = ["no_words"] if kind == "supervisions" else ["no_sup", "no_words"]  # no supervision: no utterance
        assert list(got) == list(ref_units) + extra  # manifest order; every utterance has audio
        assert {k: got[k] for k in ref_units} == ref_units
        # the corpus units + Lhotse word alignments: the dataset of the JSONL, byte for byte
        meta = _interleaved(UNITS, manifests[kind], tmp_path / f"p_{kind}", "--alignment-format", "lhotse")
        assert content_hash(str(tmp_path / f"p_{kind}")) == content_hash(str(tmp_path / "jsonl"))
        assert meta["documents"] == ref["documents"] == 43
        # the two cuts without words have no units here either: counted for the missing words
        assert meta["skipped"]["counts"] == {"no_word_alignment": 1, **({} if kind == "supervisions" else {"no_supervision": 1})}
        # units of every cut: the two without words are skipped and counted by reason
        meta = _interleaved(out, manifests[kind], tmp_path / f"q_{kind}")
        assert content_hash(str(tmp_path / f"q_{kind}")) == content_hash(str(tmp_path / "jsonl"))
        assert meta["skipped"]["counts"] == {"no_word_alignment": 1, **({} if kind == "supervisions" else {"no_supervision": 1})}
        assert any("no_words" in m and "alignment['word']" in m for m in meta["skipped"]["examples"])
    summary = capsys.readouterr().out
    assert "no_supervision" in summary and "Lhotse cut without supervisions" in summary


def test_cuts_of_a_long_recording_decode_only_their_span(tmp_path):
    """Three utterances joined into one recording; cuts at their offsets give the units of the
    separate files, and their words (in the recording's time frame) the same alignments."""
    import soundfile as sf
    from lhotse import CutSet, MonoCut, Recording, SupervisionSegment
    from lhotse.supervision import AlignmentItem

    recs = [json.loads(line) for line in open(ALIGN)][:3]
    waves = [sf.read(CORPUS / r["audio"], dtype="int16")[0] for r in recs]
    sf.write(tmp_path / "long.flac", np.concatenate(waves), 16000, subtype="PCM_16")
    long = Recording.from_file(tmp_path / "long.flac", recording_id="long")
    cuts, offset = [], 0
    for r, w in zip(recs, waves):
        start, dur = offset / 16000, len(w) / 16000
        items = [AlignmentItem(x["word"], start + x["start"], x["end"] - x["start"]) for x in r["words"]]
        sup = SupervisionSegment(id=r["id"], recording_id="long", start=0.0, duration=dur, alignment={"word": items})
        cuts.append(MonoCut(id=r["id"], start=start, duration=dur, channel=0, recording=long, supervisions=[sup]))
        offset += len(w)
    CutSet.from_cuts(cuts).to_file(tmp_path / "cuts.jsonl.gz")

    inputs, ids = audio_inputs(tmp_path / "cuts.jsonl.gz")
    assert ids == [r["id"] for r in recs] and all(isinstance(s, AudioSource) and s.is_span for s in inputs)
    for src, w in zip(inputs, waves):  # the span's samples, exactly
        assert np.array_equal(load_audio(src), w.astype(np.float32) / 32768)
    out = tmp_path / "units.jsonl"
    assert extract_units.main(["--alignments", str(tmp_path / "cuts.jsonl.gz"), "--extractor", "mel",
                               "--kmeans", KM, "--out", str(out)]) == 0  # DALI when installed: spans go to soundfile
    ref = _units(UNITS)
    assert _units(out) == {r["id"]: ref[r["id"]] for r in recs}
    lh, js = AlignmentIndex(tmp_path / "cuts.jsonl.gz"), AlignmentIndex(ALIGN)
    for r in recs:
        a, b = lh.get(r["id"]), js.get(r["id"])
        assert a.words == b.words and np.allclose(a.starts, b.starts, atol=1e-9) and np.allclose(a.ends, b.ends, atol=1e-9)


def test_bad_records_are_named_and_share_the_validator(tmp_path):
    from lhotse.supervision import AlignmentItem

    cuts = corpus_cuts(ALIGN)[:3]
    sup = cuts[1].supervisions[0]
    words = sup.alignment["word"]
    sup.alignment = {"word": [words[1], words[0], *words[2:]]}  # out of order
    lines = [json.dumps(c.to_dict()) for c in cuts]
    lines.insert(1, "{not json")
    lines.append(json.dumps({"id": "x", "supervisions": [], "recording": 3, "type": "MonoCut"}))  # not a cut
    path = tmp_path / "cuts.jsonl"
    path.write_text("\n".join(lines) + "\n")
    index = AlignmentIndex(path)
    assert index.format == "lhotse" and len(index) == 3
    assert [r for r, _ in index.problems] == ["malformed_json", "invalid_alignment"]
    assert f"{path}:2: not JSON" in index.problems[0][1] and f"{path}:5" in index.problems[1][1]
    with pytest.raises(AlignmentError, match=rf"{path}:3: utterance '{cuts[1].id}' word 1 .*starts at .* before"):
        validate(index.get(cuts[1].id))
    # a word past the end of the audio: the same check as for every other format
    cuts[0].supervisions[0].alignment["word"].append(AlignmentItem("late", cuts[0].duration, 1.0))
    path.write_text(json.dumps(cuts[0].to_dict()) + "\n")
    with pytest.raises(AlignmentError) as e:
        validate(AlignmentIndex(path).get(cuts[0].id), cuts[0].duration)
    assert e.value.reason == "outside_audio"
    rec_only = tmp_path / "x_recordings.jsonl.gz"
    shutil.copy(write_manifests(cuts[:1], tmp_path / "m")["recordings"], rec_only)
    with pytest.raises(AlignmentError, match="recordings manifest holds no words"):
        AlignmentIndex(rec_only)


def test_units_written_back_into_cuts_and_shar(manifests, tmp_path):
    from lhotse import CutSet

    out = tmp_path / "units.jsonl"
    assert extract_units.main(["--alignments", manifests["cuts"], "--extractor", "mel", "--kmeans", KM,
                               "--out", str(out), "--cuts-out", str(tmp_path / "with_units.jsonl.gz")]) == 0
    ref = {r.id: r for r in iter_records(out)}
    back = CutSet.from_file(tmp_path / "with_units.jsonl.gz")
    assert [c.id for c in back] == list(ref)
    for c in back:
        v = c.custom[UNITS_FIELD]
        assert (v["units"], v["durations"], v["num_frames"]) == (ref[c.id].units, ref[c.id].durations, ref[c.id].num_frames)
        assert c.recording.sources[0].source.endswith(".flac")  # still a loadable cut
    assert json.loads((tmp_path / "with_units.jsonl.gz.meta.json").read_text())["kmeans"]["k"] == 100
    # Shar: field shards that lhotse reads next to the others
    shar = tmp_path / "shar"
    shutil.copytree(manifests["shar"], shar)
    counts = write_units(str(shar), str(out), str(shar))
    assert counts == {"cuts": 45, "with_units": 45}
    got = {c.id: c.speech_units for c in CutSet.from_shar(in_dir=shar)}
    assert all(got[k]["units"] == ref[k].units for k in ref)
    with gzip.open(shar / f"{UNITS_FIELD}.000000.jsonl.gz", "rt") as f:
        assert json.loads(f.readline())["cut_id"] == "s01_01"
    assert (tmp_path / f"shar.{UNITS_FIELD}.meta.json").is_file()
