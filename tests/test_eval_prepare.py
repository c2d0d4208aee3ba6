"""Benchmark preparers on miniature copies of each public layout (real audio cut from the bundled
corpus), and their errors on broken layouts; word-shuffle validates its units and alignments and
counts what it skips."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import soundfile as sf

from megatron_slm.eval.items import read_items
from megatron_slm.eval.benchmarks.salmon import read_salmon
from megatron_slm.eval.benchmarks.spec import PrepareError
from megatron_slm.eval.benchmarks.storycloze import read_storycloze
from megatron_slm.eval.benchmarks.zerospeech import read_swuggy
from megatron_slm.units.records import iter_records
from megatron_slm.commands.prepare_eval_data import main as prepare_main

from conftest import CORPUS

KMEANS = str(CORPUS / "km_mel100.npy")


@pytest.fixture(scope="module")
def clips():
    """Distinct 0.5-1 s pieces of real speech."""
    out = []
    for f in sorted((CORPUS / "audio").glob("*.flac"))[:4]:
        audio, sr = sf.read(f, dtype="float32")
        for k in range(4):
            a = int((0.3 + 1.4 * k) * sr)
            out.append((audio[a:a + int((0.5 + 0.1 * k) * sr)], sr))
    return out


def write_wav(path: Path, clip) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, clip[0], clip[1])


def run(args: list[str]) -> int:
    return prepare_main([*args, "--kmeans", KMEANS, "--extractor", "mel", "--device", "cpu",
                         "--audio-backend", "soundfile", "--no-progress"])


def file_units(cache: str) -> dict[str, list[int]]:
    """Units per audio file, keyed by '<parent folder>/<file name>'."""
    return {f"{Path(r.path).parent.name}/{Path(r.path).name}": r.units for r in iter_records(cache)}


def write_gold(path: Path, header: list[str], rows: list[list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def test_swuggy_pairs_by_id_and_voice_and_resumes(tmp_path, clips):
    d = tmp_path / "sLM21" / "lexical" / "dev"
    # rows deliberately interleaved so that listing/row order would pair the wrong files
    rows = [["2", "zz1", "v1", "0", "brick", "b r ih k", "4", "1"],
            ["1", "aa9", "v1", "12", "house", "h aw s", "3", "1"],
            ["1", "qq3", "v1", "12", "hoose", "h uw s", "3", "0"],
            ["2", "bb0", "v1", "0", "brack", "b r ae k", "4", "0"]]
    write_gold(d / "gold.csv", ["id", "filename", "voice", "frequency", "word", "phones", "length", "correct"], rows)
    for i, r in enumerate(rows):
        write_wav(d / f"{r[1]}.wav", clips[i])
    out = tmp_path / "eval" / "swuggy.jsonl"
    assert run(["swuggy", "--src", str(tmp_path / "sLM21"), "--out", str(out)]) == 0
    items = {it.id: it for it in read_items(out).items}
    units = file_units(str(out) + ".units.jsonl")
    assert set(items) == {"1/v1", "2/v1"}
    assert items["1/v1"].positive.units == units["dev/aa9.wav"] and items["1/v1"].negatives[0].units == units["dev/qq3.wav"]
    assert items["2/v1"].positive.units == units["dev/zz1.wav"] and items["2/v1"].negatives[0].units == units["dev/bb0.wav"]
    assert (items["1/v1"].part, items["2/v1"].part) == ("inter", "oov")
    assert items["1/v1"].positive.text == "house"
    # the units cache doubles as a precomputed units file, and a re-run reuses it (resume)
    out2 = tmp_path / "eval" / "swuggy2.jsonl"
    assert prepare_main(["swuggy", "--src", str(tmp_path / "sLM21"), "--out", str(out2),
                         "--units-file", str(out) + ".units.jsonl"]) == 0
    assert [i.to_json() for i in read_items(out2).items] == [i.to_json() for i in read_items(out).items]
    # a missing wav named in gold.csv is an error naming the gold line
    (d / "qq3.wav").unlink()
    with pytest.raises(PrepareError, match=r"gold.csv:4: audio file .*qq3.wav is missing"):
        read_swuggy(str(tmp_path / "sLM21"))


def test_swuggy_gold_without_negative_is_rejected(tmp_path, clips):
    d = tmp_path / "lexical" / "dev"
    write_gold(d / "gold.csv", ["id", "filename", "voice", "word", "correct"],
               [["1", "a", "v1", "x", "1"], ["1", "b", "v1", "y", "1"]])
    with pytest.raises(PrepareError, match=r"exactly one row with correct=1"):
        read_swuggy(str(tmp_path))


def test_sblimp_parts_are_phenomena(tmp_path, clips, capsys):
    d = tmp_path / "syntactic" / "dev"
    rows = [["1", "f1", "v1", "anaphor_agreement", "s1", "the dog barks", "1"],
            ["1", "f2", "v1", "anaphor_agreement", "s1", "the dog bark", "0"],
            ["1", "f3", "v1", "island_effects", "s2", "who did you see", "1"],  # same id, other type
            ["1", "f4", "v1", "island_effects", "s2", "who you did see", "0"]]
    write_gold(d / "gold.csv", ["id", "filename", "voice", "type", "subtype", "transcription", "correct"], rows)
    for i, r in enumerate(rows):
        write_wav(d / f"{r[1]}.wav", clips[i])
    out = tmp_path / "sblimp.jsonl"
    assert run(["sblimp", "--src", str(tmp_path), "--out", str(out)]) == 0
    assert "2 parts" in capsys.readouterr().out
    items = read_items(out).items
    assert sorted(i.part for i in items) == ["anaphor_agreement", "island_effects"]
    units = file_units(str(out) + ".units.jsonl")
    by_part = {i.part: i for i in items}
    assert by_part["island_effects"].positive.units == units["dev/f3.wav"]
    assert by_part["island_effects"].negatives[0].text == "who you did see"


def test_storycloze_pairs_by_story_id(tmp_path, clips):
    root = tmp_path / "sSC"
    for k, sid in enumerate(["10_a1b2", "2_c3d4", "sub/7_e5f6"]):
        write_wav(root / f"{sid}_incorrect.wav", clips[2 * k + 1])
        write_wav(root / f"{sid}_correct.wav", clips[2 * k])
    (root / "2_c3d4_correct.txt").write_text("They went home.\n")
    out = tmp_path / "ssc.jsonl"
    assert run(["ssc", "--src", str(root), "--out", str(out)]) == 0
    s = read_items(out)
    assert s.task == "ssc" and s.unit_identity["k"] == 100
    items = {i.id: i for i in s.items}
    units = file_units(str(out) + ".units.jsonl")
    assert set(items) == {"10_a1b2", "2_c3d4", "sub/7_e5f6"}
    assert items["2_c3d4"].positive.units == units["sSC/2_c3d4_correct.wav"]
    assert items["2_c3d4"].negatives[0].units == units["sSC/2_c3d4_incorrect.wav"]
    assert items["2_c3d4"].positive.text == "They went home."
    (root / "sub" / "7_e5f6_incorrect.wav").unlink()
    with pytest.raises(PrepareError, match=r"lack their pair; missing audio: sub/7_e5f6_incorrect"):
        read_storycloze(str(root))


def test_salmon_parts_and_multiple_negatives(tmp_path, clips):
    root = tmp_path / "salmon"
    for i in range(3):
        write_wav(root / "speaker_consistency" / f"sample_{i}_0.wav", clips[i])
        write_wav(root / "speaker_consistency" / f"sample_{i}_1.wav", clips[i + 4])
    for o in range(3):
        write_wav(root / "bg_alignment" / f"sample_5_{o}.wav", clips[8 + o])
    out = tmp_path / "salmon.jsonl"
    assert run(["salmon", "--src", str(root), "--out", str(out)]) == 0
    items = {i.id: i for i in read_items(out).items}
    units = file_units(str(out) + ".units.jsonl")
    assert set(items) == {"speaker_consistency/0", "speaker_consistency/1", "speaker_consistency/2", "bg_alignment/5"}
    assert len(items["bg_alignment/5"].negatives) == 2 and items["bg_alignment/5"].part == "bg_alignment"
    # same file names in two parts must not be confused
    assert items["speaker_consistency/1"].positive.units == units["speaker_consistency/sample_1_0.wav"]
    assert items["bg_alignment/5"].negatives[1].units == units["bg_alignment/sample_5_2.wav"]
    (root / "bg_alignment" / "sample_5_1.wav").unlink()
    with pytest.raises(PrepareError, match=r"sample 5 has options \[0, 2\]"):
        read_salmon(str(root))


@pytest.mark.parametrize("direction", ["s2t", "t2s"])
def test_cross_modal_prompts(tmp_path, clips, direction):
    root = tmp_path / "cm"
    for k, sid in enumerate(["0", "1"]):
        for j, label in enumerate(["mutual", "correct", "incorrect"]):
            write_wav(root / f"{sid}_{label}.wav", clips[3 * k + j])
            (root / f"{sid}_{label}.txt").write_text(f"{label} text {sid}")
    out = tmp_path / f"cm_{direction}.jsonl"
    assert run(["cross-modal", "--direction", direction, "--src", str(root), "--out", str(out)]) == 0
    s = read_items(out)
    it = {i.id: i for i in s.items}["1"]
    assert it.task == f"sc_{direction}"
    if direction == "s2t":
        assert it.prompt.units and it.prompt.text is None and it.positive.text == "correct text 1"
        assert it.positive.units is None
    else:
        assert it.prompt.text == "mutual text 1" and it.positive.units and it.negatives[0].units


def test_cli_reports_missing_layout_without_traceback(tmp_path, capsys):
    assert run(["ssc", "--src", str(tmp_path / "nope"), "--out", str(tmp_path / "x.jsonl")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err and "not a directory" in err


def test_every_benchmark_is_registered_with_its_layout_and_pairing():
    """The command offers exactly the registry; each benchmark says what it reads and how it pairs."""
    from megatron_slm.commands.prepare_eval_data import parse_args
    from megatron_slm.eval.benchmarks.registry import BENCHMARKS, read_specs
    from megatron_slm.eval.benchmarks.spec import ReadRequest

    assert list(BENCHMARKS) == ["swuggy", "sblimp", "ssc", "tsc", "salmon", "cross-modal", "word-shuffle"]
    for name, b in BENCHMARKS.items():
        assert b.name == name and b.files and b.pairing
        assert parse_args([name, "--src", "x", "--out", "y", "--units-file", "u", "--alignments", "a"]).benchmark == name
    assert {n for n, b in BENCHMARKS.items() if b.hf_columns} == {"swuggy", "sblimp", "ssc", "tsc", "salmon"}
    with pytest.raises(PrepareError, match="built from a corpus"):
        read_specs("word-shuffle", ReadRequest("x"))


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
