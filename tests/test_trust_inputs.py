"""Nothing lost, nothing silently changed: audio, records, benchmarks and k-means files under hostile input.

Each test pins one defect found by adversarial probing (numbered as in the issue that listed them):
real files decoded by DALI and soundfile, real JSONL records through the readers, the CLIs called
in-process (one subprocess, where a hang is what is tested).
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import CORPUS, REPO, TOKENIZER, _env
from megatron_slm.audio.decode_dali import HAVE_DALI
from megatron_slm.audio.loader import AudioLoader
from megatron_slm.audio.probe import probe
from megatron_slm.audio.sources import AudioSource, list_audio_files

KM = CORPUS / "km_mel100.npy"
SR = 16000


def _speech(seconds: float) -> np.ndarray:
    """Real speech (the tiny corpus' espeak audio), `seconds` long."""
    audio, sr = sf.read(CORPUS / "audio" / "s01_01.flac", dtype="float32")
    assert sr == SR
    return audio[: int(seconds * SR)]


@pytest.fixture(scope="module")
def bad_audio(tmp_path_factory) -> Path:
    """good.wav, tone.mp3, nan.wav, inf.wav, silent.wav, trunc.wav (header 2 s, data 0.67 s), loud.wav
    (finite samples whose log-mel overflows float32)."""
    d = tmp_path_factory.mktemp("audio")
    x = _speech(2.0)
    sf.write(d / "good.wav", x, SR, subtype="PCM_16")
    sf.write(d / "tone.mp3", x, SR, format="MP3")
    y = x.copy()
    y[1000:1100] = np.nan
    sf.write(d / "nan.wav", y, SR, subtype="FLOAT")
    y = x.copy()
    y[5] = np.inf
    sf.write(d / "inf.wav", y, SR, subtype="FLOAT")
    sf.write(d / "silent.wav", np.zeros(SR, np.float32), SR, subtype="PCM_16")
    full = (d / "good.wav").read_bytes()
    (d / "trunc.wav").write_bytes(full[: 44 + int(0.67 * SR) * 2])  # the header still says 2 s
    sf.write(d / "loud.wav", x * 1e30, SR, subtype="FLOAT")
    return d


def _files(d: Path, *names: str) -> list[str]:
    return [str(d / n) for n in names]


# ----------------------------------------------------------------------------- 1 + 8: decoding


@pytest.mark.parametrize("backend", ["dali", "soundfile"])
def test_decoding_skips_non_finite_and_truncated_audio_and_reports_silence(bad_audio, backend):
    if backend == "dali" and not HAVE_DALI:
        pytest.skip("DALI not installed")
    assert sf.info(str(bad_audio / "trunc.wav")).frames < 2 * SR  # libsndfile counts what is left
    paths = _files(bad_audio, "good.wav", "nan.wav", "inf.wav", "silent.wav", "trunc.wav", "tone.mp3")
    items, skipped = probe(paths)
    assert not skipped
    # the Lhotse paths: a span of a recording (soundfile seeks) and encoded bytes (a Shar member)
    span_nan = AudioSource(str(bad_audio / "nan.wav"), offset=0.05, duration=1.0)
    trunc = (bad_audio / "trunc.wav").read_bytes()
    held = AudioSource("shar/trunc.wav", data=lambda: trunc)
    more, skipped = probe([span_nan, held], ["span_nan", "held_trunc"])
    assert not skipped and more[1].duration == pytest.approx(2.0)
    skips, warns, kept = [], [], []
    for batch in AudioLoader(backend, "cpu", 1).batches(items + more, on_skip=skips.append, on_warn=warns.append):
        assert bool(batch.waves.isfinite().all())
        kept += [os.path.basename(it.path) for it in batch.items]
    reasons = {os.path.basename(s.path): s.reason for s in skips}
    assert sorted(kept) == ["good.wav", "silent.wav", "tone.mp3"]
    assert reasons["nan.wav"].startswith("non-finite samples (") and "NaN" in reasons["nan.wav"]
    assert reasons["inf.wav"] == "non-finite samples (0 NaN, 1 Inf)"
    assert reasons["trunc.wav"] == "truncated: the header declares 2.000 s, 0.670 s decoded"
    assert len(skips) == 5 and [s.path for s in skips].count(str(bad_audio / "nan.wav")) == 2
    assert [(os.path.basename(w.path), w.kind) for w in warns] == [("silent.wav", "silent")]


def test_extract_units_skips_bad_audio_lists_only_regular_files_and_counts_reasons(bad_audio, tmp_path):
    """The CLI in a subprocess: before, the FIFO hung it forever and the NaN file became one run of unit 0."""
    d = tmp_path / "audio"
    shutil.copytree(bad_audio, d)
    (d / "loud.wav").unlink()
    os.mkfifo(d / "pipe.wav")
    out = tmp_path / "units.jsonl"
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "extract_units.py"), "--audio-dir", str(d),
                           "--extractor", "mel", "--kmeans", str(KM), "--out", str(out)],
                          cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["id"] for r in recs) == ["good", "silent", "tone"]
    summary = proc.stdout
    assert ("skipped 4 (2 x non-finite samples, 1 x not a regular file, 1 x truncated); "
            "warnings 1 (1 x silent)") in summary, summary
    assert f"skipped {d / 'pipe.wav'}: not a regular file (a FIFO)" in summary
    tsv = (tmp_path / "units.jsonl.skipped.tsv").read_text()
    assert "trunc.wav\ttruncated" in tsv and "silent.wav\tsilent (all samples zero): kept" in tsv


def test_train_kmeans_skips_nan_audio_and_refuses_non_finite_features(bad_audio, tmp_path, capsys):
    from megatron_slm.commands import train_kmeans

    def run(*names, out):
        d = tmp_path / out
        d.mkdir()
        for n in names:
            shutil.copy(bad_audio / n, d)
        return train_kmeans.main(["--audio-dir", str(d), "--extractor", "mel", "--k", "4", "--steps", "10",
                                  "--batch-size", "64", "--out", str(tmp_path / f"{out}.npy")])

    # before: NaN centroids written, exit 0, "inertia nan"
    assert run("good.wav", "nan.wav", "silent.wav", out="a") == 0
    printed = capsys.readouterr().out
    assert np.isfinite(np.load(tmp_path / "a.npy")).all() and "inertia nan" not in printed
    assert "skipped 1 files (1 x non-finite samples)" in printed and "warnings 1 (1 x silent)" in printed
    # finite samples, non-finite log-mel: refused, naming the file, nothing written
    assert run("good.wav", "loud.wav", out="b") == 1
    err = capsys.readouterr().err
    assert "non-finite features from 1 file(s)" in err and "loud.wav" in err
    assert not (tmp_path / "b.npy").exists()


def test_non_finite_codebooks_and_features_are_refused(tmp_path):
    import torch

    from megatron_slm.commands import extract_units
    from megatron_slm.units.kmeans import load_centroids, train_minibatch_kmeans

    c = np.load(KM)
    c[3, 1] = np.nan
    np.save(tmp_path / "nan_km.npy", c)
    with pytest.raises(ValueError, match=r"nan_km.npy: 1 of 100 centroids are not finite \(first: centroid 3\)"):
        load_centroids(tmp_path / "nan_km.npy")
    x = torch.randn(500, 8)
    x[7, 2] = float("inf")
    with pytest.raises(ValueError, match="1 of 500 feature frames are not finite"):
        train_minibatch_kmeans(x, 4, steps=2)
    # before: every frame of every file became unit 0
    rc = extract_units.main(["--alignments", str(CORPUS / "alignments.jsonl"), "--kmeans", str(tmp_path / "nan_km.npy"),
                             "--out", str(tmp_path / "u.jsonl")])
    assert rc == 2 and not (tmp_path / "u.jsonl").exists()


# ----------------------------------------------------------------------------- 7: numeric records


def _units_record(**change) -> dict:
    rec = {"id": "s01_03", "path": "audio/s01_03.flac", "units": [5, 7, 5], "durations": [2, 1, 3],
           "unit_seconds": 0.04, "num_frames": 6, "audio_seconds": 0.25}
    rec.update(change)
    return rec


BAD_UNITS = [
    (dict(units=[5, 3.7, 5]), "field 'units'[1] must be an integer, not 3.7"),
    (dict(units=[5, "7", 5]), "field 'units'[1] must be an integer, not '7'"),
    (dict(units=[5, True, 5]), "field 'units'[1] must be an integer, not True"),
    (dict(durations=[2, -1, 5]), "field 'durations'[1] must be >= 1, not -1"),
    (dict(durations=[2, 0, 4]), "field 'durations'[1] must be >= 1, not 0"),
    (dict(unit_seconds=0), "field 'unit_seconds' must be > 0, not 0"),
    (dict(unit_seconds=float("nan")), "field 'unit_seconds' must be a finite number, not nan"),
    (dict(audio_seconds=float("inf")), "field 'audio_seconds' must be a finite number, not inf"),
    (dict(num_frames=6.0), "field 'num_frames' must be an integer, not 6.0"),
    (dict(id=7), "field 'id' must be a string, not 7"),
    (dict(units=[5, 2 ** 70, 5]), "field 'units'[1] must be an integer, not 1.1805916207174113e+21"),  # orjson: a float
    (dict(units=[5, 100, 5]), "field 'units'[1] = 100 outside [0, 100)"),
]


@pytest.mark.parametrize("change,message", BAD_UNITS, ids=["units-float", "units-str", "units-bool", "durations-neg",
                                                           "durations-zero", "unit_seconds-0", "unit_seconds-nan",
                                                           "audio_seconds-inf", "num_frames-float", "id-int",
                                                           "units-huge", "units-K"])
def test_units_records_are_validated_never_coerced_on_every_path(change, message, tmp_path):
    """Before: 3.7, "7" and true became 3, 7 and 1; negative durations and unit_seconds 0 passed."""
    from megatron_slm.corpus.alignments import AlignmentIndex
    from megatron_slm.data.prepare import prepare_batch, prepare_interleaved
    from megatron_slm.data.records import RecordError, decode_json_line
    from megatron_slm.units.records import parse_record

    units = tmp_path / "units.jsonl"
    raw = [json.dumps(_units_record(id="ok")).encode(), json.dumps(_units_record(**change)).encode()]
    units.write_bytes(b"\n".join(raw) + b"\n")  # NaN/Infinity: literals the stdlib decoder reads back
    where = f"{units}:2"
    with pytest.raises(ValueError) as e:
        parse_record(decode_json_line(raw[1], where), where, num_units=100)
    assert str(e.value) == f"{where}: {message}"
    # preprocessing: the per-record reference and the vectorised shard path give the same message
    align = tmp_path / "align.jsonl"
    words = [{"word": "hi", "start": 0.0, "end": 0.1}, {"word": "there", "start": 0.12, "end": 0.24}]
    align.write_text("".join(json.dumps({"id": i, "words": words}) + "\n" for i in ("s01_03", "ok")))
    index, vocab = AlignmentIndex(str(align)), _vocab()
    records = [(f"{units}:{i + 1}", decode_json_line(r, f"{units}:{i + 1}")) for i, r in enumerate(raw)]
    with pytest.raises(RecordError) as ref:
        prepare_interleaved(records[1][1], where, vocab, index)
    assert str(ref.value) == f"{where}: {message}" and ref.value.reason == "invalid_units"
    for lines in (raw, None):  # with the raw lines (preprocessing) and without (any other caller)
        kept, _, _, errors = prepare_batch(records, vocab, index, lines=lines)
        assert kept == [0] and [str(err) for _, err in errors] == [f"{where}: {message}"]


_VOCAB = []


def _vocab():
    from megatron_slm.vocab import SpeechVocab

    if not _VOCAB:
        _VOCAB.append(SpeechVocab.from_pretrained(str(TOKENIZER), num_units=100))
    return _VOCAB[0]


@pytest.mark.parametrize("value,message", [(True, "must be a finite number, not True"),
                                           ("0.5", "must be a finite number, not '0.5'"),
                                           (float("nan"), "must be a finite number, not nan")])
def test_alignment_times_are_numbers_in_every_format(value, message, tmp_path):
    """Before: true and "0.5" became 1.0 and 0.5."""
    from megatron_slm.corpus.alignments import AlignmentIndex
    from megatron_slm.corpus.words import AlignmentError, validate

    words = [{"word": "hi", "start": 0.0, "end": 0.3}, {"word": "you", "start": value, "end": 0.9}]
    jsonl, whisper = tmp_path / "a.jsonl", tmp_path / "w"
    jsonl.write_text(json.dumps({"id": "u", "words": words}) + "\n")
    whisper.mkdir()
    (whisper / "u.json").write_text(json.dumps({"word_segments": words}))
    for path, where in ((jsonl, f"{jsonl}:1"), (whisper, str(whisper / "u.json"))):
        index = AlignmentIndex(str(path))
        if index.format == "jsonl" and value != value:  # NaN is no JSON: the line is refused whole
            assert [(r, m.split(" (")[0]) for r, m in index.problems] == [("malformed_json", f"{where}: not JSON")]
            continue
        with pytest.raises(AlignmentError) as e:
            validate(index.get("u"))
        assert str(e.value) == f"{where}: field 'words[1].start' {message}"


@pytest.mark.parametrize("units,field", [([1, True], "'positive.units'[1] must be an integer, not True"),
                                         ([1, 3.7], "'positive.units'[1] must be an integer, not 3.7"),
                                         (["7"], "'positive.units'[0] must be an integer, not '7'")])
def test_eval_items_refuse_non_integer_units(units, field, tmp_path):
    from megatron_slm.eval.items import FORMAT, ItemError, read_items

    p = tmp_path / "items.jsonl"
    p.write_text(json.dumps({"format": FORMAT, "version": 1, "task": "t", "unit_identity": None}) + "\n"
                 + json.dumps({"id": "a", "task": "t", "positive": {"units": units}, "negatives": [{"units": [2]}]}) + "\n")
    with pytest.raises(ItemError, match=f"^{p}:2: field {field}".replace("[", r"\[")):
        read_items(p)


def test_duplicate_ids_are_matched_after_json_decoding_and_an_empty_result_keeps_the_old_dataset(tmp_path):
    """7: a duplicate spelled with JSON escapes was stored twice. 8: 0 usable records exited 0 and
    replaced an existing dataset with an empty one."""
    from megatron_slm.commands import preprocess_data
    from megatron_slm.data.preprocess import PreprocessJob, PreprocessError, run

    units = (CORPUS / "units.jsonl").read_text().splitlines()[:6]
    first = json.loads(units[2])
    escaped = units[2].replace(f'"{first["id"]}"', json.dumps(first["id"]).replace("0", "\\u0030"), 1)
    assert escaped != units[2] and json.loads(escaped)["id"] == first["id"]
    src = tmp_path / "units.jsonl"
    src.write_text("\n".join(units + [escaped]) + "\n")
    shutil.copy(CORPUS / "units.jsonl.meta.json", tmp_path / "units.jsonl.meta.json")
    prefix = tmp_path / "data" / "speech"
    job = dict(kind="speech", tokenizer=str(TOKENIZER), out_prefix=str(prefix), progress=False)
    meta = run(PreprocessJob(inputs=[str(src)], **job))
    assert meta["documents"] == 6 and meta["skipped"]["counts"] == {"duplicate_id": 1}
    before = {p.name: p.read_bytes() for p in prefix.parent.iterdir()}
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps(dict(json.loads(u), units=[3.7] * len(json.loads(u)["units"]))) + "\n"
                           for u in units))
    shutil.copy(CORPUS / "units.jsonl.meta.json", tmp_path / "bad.jsonl.meta.json")
    with pytest.raises(PreprocessError, match=r"no usable records \(6 invalid_units\); first: .*bad.jsonl:1: "
                                              r"field 'units'\[0\] must be an integer, not 3.7; the existing dataset"):
        run(PreprocessJob(inputs=[str(bad)], **job))
    assert {p.name: p.read_bytes() for p in prefix.parent.iterdir() if not p.name.endswith(".tmp")} == before
    assert preprocess_data.main(["speech", "--tokenizer", str(TOKENIZER), "--units", str(bad),
                                 "--out-prefix", str(prefix), "--quiet"]) == 1


# ----------------------------------------------------------------------------- 11 + 12: other CLIs, messages


def test_word_shuffle_validates_its_inputs_and_counts_what_it_skips(tmp_path, capsys):
    from megatron_slm.commands import prepare_eval_data

    units = (CORPUS / "units.jsonl").read_text().splitlines()[:8]
    aligns = [json.loads(a) for a in (CORPUS / "alignments.jsonl").read_text().splitlines()[:8]]
    aligns[1]["words"][1], aligns[1]["words"][2] = aligns[1]["words"][2], aligns[1]["words"][1]  # swapped
    aligns[2]["words"][-1]["end"] = 99.0                                                         # beyond the audio
    del aligns[3]["words"][0]["end"]                                                             # a word without end
    u4 = json.loads(units[4])
    u4["units"][0] = 100                                                                          # units >= K
    units[4] = json.dumps(u4)
    (tmp_path / "u.jsonl").write_text("\n".join(units + ["17"]) + "\n")                           # a bare number line
    shutil.copy(CORPUS / "units.jsonl.meta.json", tmp_path / "u.jsonl.meta.json")
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(a) + "\n" for a in aligns) + "42\n")
    args = ["word-shuffle", "--units-file", str(tmp_path / "u.jsonl"), "--alignments", str(tmp_path / "a.jsonl")]
    assert prepare_eval_data.main(args + ["--out", str(tmp_path / "ws.jsonl")]) == 0
    out = capsys.readouterr().out
    assert "wrote 4 items" in out and "skipped 6:" in out, out
    for line in ("2 x invalid_alignment", "1 x invalid_units", "2 x malformed_json", "1 x outside_audio"):
        assert line in out, out
    assert f"{tmp_path / 'u.jsonl'}:5: field 'units'[0] = 100 outside [0, 100)" in out
    # nothing usable: a named error, nothing written
    (tmp_path / "none.jsonl").write_text("17\n")
    shutil.copy(CORPUS / "units.jsonl.meta.json", tmp_path / "none.jsonl.meta.json")
    args[2] = str(tmp_path / "none.jsonl")
    assert prepare_eval_data.main(args + ["--out", str(tmp_path / "none_ws.jsonl")]) == 1
    assert "no usable utterance" in capsys.readouterr().err and not (tmp_path / "none_ws.jsonl").exists()


def test_alignment_inputs_of_unit_extraction_name_the_file_line_and_field(tmp_path, capsys):
    """11: a bare number line crashed; 12: non-UTF-8 named no file, and a duplicate id suggested
    --ids relpath, which does not apply to --alignments."""
    from megatron_slm.commands import extract_units

    good = (CORPUS / "alignments.jsonl").read_text().splitlines()[:2]
    cases = {"number": (good[0] + "\n7\n").encode(), "utf8": (good[0] + "\n").encode() + b'{"id": "\xff"}\n',
             "dup": (good[0] + "\n" + good[0] + "\n").encode(), "audio": b'{"id": "x", "audio": 5}\n'}
    expect = {"number": ":2: expected a JSON object, got int", "utf8": ":2: not UTF-8 (byte 8)",
              "dup": ":2: utterance id 's01_01' already on", "audio": ":1: field 'audio' must be a string, not 5"}
    for name, data in cases.items():
        path = tmp_path / f"{name}.jsonl"
        path.write_bytes(data)
        assert extract_units.main(["--alignments", str(path), "--kmeans", str(KM), "--out", str(tmp_path / "u.jsonl")]) == 2
        err = capsys.readouterr().err
        assert f"{path}{expect[name]}" in err and "Traceback" not in err and "--ids" not in err, err


def test_one_audio_rule_for_directories_and_file_lists(bad_audio, tmp_path):
    """13: .mp3 was ignored by --audio-dir but decoded via --file-list; 11: a FIFO hung the listing."""
    from megatron_slm.audio.skips import Skipped
    from megatron_slm.commands.unit_args import resolve_inputs

    d = tmp_path / "audio"
    d.mkdir()
    for n in ("good.wav", "tone.mp3"):
        shutil.copy(bad_audio / n, d)
    (d / "notes.txt").write_text("not audio")
    os.mkfifo(d / "pipe.flac")
    left: list[Skipped] = []
    assert [os.path.basename(p) for p in list_audio_files(d, skipped=left)] == ["good.wav", "tone.mp3"]
    assert [(os.path.basename(s.path), s.reason) for s in left] == [("pipe.flac", "not a regular file (a FIFO)")]
    (d / "list.txt").write_text("good.wav\ntone.mp3\nnotes.txt\n")
    ns = argparse.Namespace(alignments=None, audio_dir=None, file_list=str(d / "list.txt"), ids="stem")
    left = []
    paths, ids = resolve_inputs(ns, left)
    assert ids == ["good", "tone"] and [os.path.basename(s.path) for s in left] == ["notes.txt"]
    assert left[0].reason.startswith("not an audio file name (the extension is none of .wav, .flac, .ogg, .opus, .mp3")
    # a FIFO in a file list is refused before any decoder opens it
    items, skipped = probe([str(d / "pipe.flac")])
    assert not items and skipped[0].reason == "not a regular file (a FIFO)"


def test_eval_messages_name_the_item_file_line_and_the_right_restriction(tmp_path):
    from megatron_slm.eval.items import FORMAT, ItemError, read_items
    from megatron_slm.eval.scoring import allowed_mask, check_restriction, encode_items

    vocab = _vocab()
    p = tmp_path / "items.jsonl"
    header = json.dumps({"format": FORMAT, "version": 1, "task": "t", "unit_identity": None})
    item = lambda i, pos: json.dumps({"id": i, "task": "t", "positive": pos, "negatives": [pos]})  # noqa: E731
    p.write_text("\n".join([header, item("a", {"units": [1, 2]}), item("b", {"units": [3, 150]})]) + "\n")
    with pytest.raises(ItemError, match=rf"^{p}:3: item 'b' positive: unit 150 >= the vocabulary's 100 units"):
        encode_items(read_items(p).items, vocab)
    p.write_text("\n".join([header, item("a", {"units": [1, 2]}), item("b", {"text": "the end"})]) + "\n")
    seqs, _ = encode_items(read_items(p).items, vocab)
    with pytest.raises(ItemError, match=rf"^{p}:3: item 'b' positive: restrict='speech' but .* \(score text "
                                        r"candidates with restrict=text or none\)"):
        check_restriction(seqs, allowed_mask(vocab, vocab.vocab_size, "speech"), "speech")
    with pytest.raises(ItemError, match=rf"^{p}:2: item 'a' positive: restrict='text' but .* \(score speech "
                                        r"candidates with restrict=speech or none\)"):
        check_restriction(seqs, allowed_mask(vocab, vocab.vocab_size, "text"), "text")


# ----------------------------------------------------------------------------- 14: pickles


class _Payload:
    """A pickle that runs code when loaded (what a hostile km500.bin can do)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "ran"))


def test_pickled_kmeans_is_refused_unless_trusted_and_converts_once_to_npy(tmp_path, capsys):
    import joblib
    from sklearn.cluster import KMeans

    from megatron_slm.commands import convert_kmeans, extract_units
    from megatron_slm.units.kmeans import PickleRefused, centroids_sha256, load_centroids

    marker = tmp_path / "ran.txt"
    with open(tmp_path / "evil.bin", "wb") as f:
        pickle.dump(_Payload(str(marker)), f)
    with pytest.raises(PickleRefused, match=r"evil.bin: a pickled k-means.*convert_kmeans.py --trust-pickle"):
        load_centroids(tmp_path / "evil.bin")
    rc = extract_units.main(["--alignments", str(CORPUS / "alignments.jsonl"), "--kmeans", str(tmp_path / "evil.bin"),
                             "--out", str(tmp_path / "u.jsonl")])
    assert rc == 2 and "--trust-pickle" in capsys.readouterr().err
    assert convert_kmeans.main([str(tmp_path / "evil.bin"), str(tmp_path / "evil.npy")]) == 2
    assert not marker.exists()  # nothing was unpickled
    with pytest.raises(ValueError):  # trusted, it runs -- which is why trust is explicit
        load_centroids(tmp_path / "evil.bin", trust_pickle=True)
    assert marker.read_text() == "ran"

    km = KMeans(n_clusters=5, n_init=1, random_state=0).fit(np.random.default_rng(0).normal(size=(200, 40)))
    joblib.dump(km, tmp_path / "km.bin")  # the TWIST format
    assert convert_kmeans.main(["--trust-pickle", str(tmp_path / "km.bin"), str(tmp_path / "km.npy")]) == 0
    assert centroids_sha256(load_centroids(tmp_path / "km.npy")) == \
        centroids_sha256(load_centroids(tmp_path / "km.bin", trust_pickle=True))
    assert "same codebook identity" in capsys.readouterr().out
    assert convert_kmeans.main(["--trust-pickle", str(tmp_path / "km.bin"), str(tmp_path / "km.npy")]) == 2  # exists
    from megatron_slm.commands.prepare_eval_data import parse_args

    assert parse_args(["ssc", "--src", "x", "--out", "y", "--kmeans", "km.bin", "--trust-pickle"]).trust_pickle
