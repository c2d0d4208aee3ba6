"""tools/extract_units.py end to end: bundled units reproduce, bad files skipped, resume, torchrun;
hostile audio and alignment inputs are skipped or refused naming the file, line and field."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from megatron_slm.units.records import check_compatible, iter_records, read_meta

from conftest import CORPUS, REPO, _env

KM = os.path.join(CORPUS, "km_mel100.npy")
sys.path.insert(0, os.path.join(REPO, "tools"))
import extract_units  # noqa: E402

IDS = ["s01_01", "s02_03", "s03_05", "s05_02", "s06_04", "s08_02"]


def bundled():
    return {r.id: r for r in iter_records(os.path.join(CORPUS, "units.jsonl"))}


@pytest.fixture()
def audio_dir(tmp_path):
    d = tmp_path / "audio"
    d.mkdir()
    for i in IDS:
        shutil.copy(os.path.join(CORPUS, "audio", f"{i}.flac"), d)
    return d


def _run(audio_dir, out, *extra):
    return extract_units.main(["--audio-dir", str(audio_dir), "--extractor", "mel", "--kmeans", KM,
                               "--out", str(out), "--max-batch-seconds", "20", *extra])


def _units(out):
    return {r.id: (r.units, r.durations, r.num_frames) for r in iter_records(out)}


def test_bundled_corpus_units_match_code():
    """The committed units.jsonl is what the current code produces (and its sidecar is coherent)."""
    meta = read_meta(os.path.join(CORPUS, "units.jsonl"))
    assert meta["kmeans"]["k"] == 100 and meta["unit_seconds"] == 0.04 and meta["extractor"]["name"] == "mel"
    recs = bundled()
    align = [json.loads(line) for line in open(os.path.join(CORPUS, "alignments.jsonl"))]
    assert [a["id"] for a in align] == list(recs)
    for a in align:
        r = recs[a["id"]]
        assert r.path == a["audio"]
        assert r.num_frames == int(r.audio_seconds * 16000) // 640
        assert a["words"][-1]["end"] < r.audio_seconds


def test_bad_files_skipped_and_others_unchanged(audio_dir, tmp_path, capsys):
    (audio_dir / "corrupt.flac").write_bytes(b"fLaC" + os.urandom(300))
    (audio_dir / "empty.wav").write_bytes(b"")
    # valid header, truncated body: passes probing, fails in the (DALI) decoder mid-batch
    (audio_dir / "truncated.flac").write_bytes((audio_dir / f"{IDS[0]}.flac").read_bytes()[:20000])
    out = tmp_path / "u" / "units.jsonl"
    assert _run(audio_dir, out) == 0
    summary = capsys.readouterr().out
    assert "skipped 3" in summary
    assert all(n in summary for n in ("corrupt.flac", "empty.wav", "truncated.flac: decode failed"))
    skipped = (tmp_path / "u" / "units.jsonl.skipped.tsv").read_text().splitlines()
    assert len(skipped) == 3 and all("\t" in line for line in skipped)
    got = _units(out)
    assert list(got) == IDS  # input order
    ref = bundled()
    for i in IDS:
        assert got[i] == (ref[i].units, ref[i].durations, ref[i].num_frames)
    assert check_compatible([out, os.path.join(CORPUS, "units.jsonl")])["kmeans"]["k"] == 100
    assert not list((tmp_path / "u").glob("*.part*"))


def test_killed_run_resumes_without_duplicates(audio_dir, tmp_path, capsys):
    out = tmp_path / "units.jsonl"
    assert _run(audio_dir, out) == 0
    full = _units(out)
    # State of a run killed mid-write: parts from 2 ranks, one with a half-written line, no merge.
    lines = out.read_text().splitlines(keepends=True)
    (tmp_path / "units.jsonl.part0.jsonl").write_text(lines[0] + lines[1] + lines[2][:40])
    (tmp_path / "units.jsonl.part1.jsonl").write_text(lines[3])
    out.unlink()
    capsys.readouterr()
    assert _run(audio_dir, out) == 0
    assert "3 done before" in capsys.readouterr().out  # 2 whole lines in part0 + 1 in part1
    ids = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert ids == IDS
    assert _units(out) == full
    # a finished run is a no-op
    assert _run(audio_dir, out) == 0 and _units(out) == full


def test_cli_user_errors(audio_dir, tmp_path, capsys):
    assert _run(audio_dir, tmp_path / "a.jsonl", "--kmeans", str(tmp_path / "none.npy")) == 2
    assert "none.npy" in capsys.readouterr().err
    np.save(tmp_path / "km8.npy", np.zeros((8, 40), np.float32))
    out = tmp_path / "b.jsonl"
    assert _run(audio_dir, out) == 0
    assert _run(audio_dir, out, "--kmeans", str(tmp_path / "km8.npy")) == 2
    assert "different extractor/k-means" in capsys.readouterr().err
    np.save(tmp_path / "km_bad.npy", np.zeros((8, 12), np.float32))
    assert _run(audio_dir, tmp_path / "c.jsonl", "--kmeans", str(tmp_path / "km_bad.npy")) == 2
    assert "dimension 12" in capsys.readouterr().err


@pytest.mark.slow
def test_torchrun_two_ranks_match_single_process(audio_dir, tmp_path):
    out = tmp_path / "tr" / "units.jsonl"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           os.path.join(REPO, "tools", "extract_units.py"), "--audio-dir", str(audio_dir), "--extractor", "mel",
           "--kmeans", KM, "--out", str(out), "--audio-backend", "soundfile", "--device", "cpu"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "2 rank(s)" in proc.stdout
    got = _units(out)
    assert list(got) == IDS
    ref = bundled()
    assert all(got[i] == (ref[i].units, ref[i].durations, ref[i].num_frames) for i in IDS)


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


def test_alignment_inputs_of_unit_extraction_name_the_file_line_and_field(tmp_path, capsys):
    """A bare number line crashed; non-UTF-8 named no file, and a duplicate id suggested
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
