"""tools/synthesize_corpus.py: espeak-ng speech whose word alignments are exact by construction."""
import json
import os
import shutil
import sys

import numpy as np
import pytest
import soundfile as sf

from megatron_slm.corpus.synth import read_utterances, split_words

from conftest import REPO

sys.path.insert(0, os.path.join(REPO, "tools"))
import synthesize_corpus  # noqa: E402

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")


def test_read_utterances_ids_and_errors(tmp_path):
    p = tmp_path / "s.txt"
    p.write_text("# comment\nThe cat sat.\nA dog ran - fast.\n\n\nNew story here.\nmy_id\tNamed one.\n")
    utts = read_utterances(p)
    assert [(u.id, u.text) for u in utts] == [("s01_01", "The cat sat."), ("s01_02", "A dog ran - fast."),
                                             ("s02_01", "New story here."), ("my_id", "Named one.")]
    assert split_words("A dog ran - fast.") == ["A", "dog", "ran -", "fast."]
    p.write_text("x\tOne.\nx\tTwo.\n")
    with pytest.raises(ValueError, match=r"s.txt:2: duplicate utterance id 'x'"):
        read_utterances(p)


@needs_espeak
def test_synthesis_alignments_exact_and_resumable(tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text("The little dog ran home, happy.\nLily saw a big red ball.\n")
    out = tmp_path / "corpus"
    assert synthesize_corpus.main(["--text", str(text), "--out", str(out), "--limit", "1"]) == 0
    assert synthesize_corpus.main(["--text", str(text), "--out", str(out)]) == 0  # resumes: only the 2nd is new
    assert "skipped 1 already done" in capsys.readouterr().out
    recs = [json.loads(line) for line in (out / "alignments.jsonl").read_text().splitlines()]
    assert [r["id"] for r in recs] == ["s01_01", "s01_02"]
    for r in recs:
        audio, sr = sf.read(out / r["audio"], dtype="float32")
        assert sr == 16000 and audio.ndim == 1
        assert " ".join(w["word"] for w in r["words"]) == r["text"]
        bounds = [0.0] + [t for w in r["words"] for t in (w["start"], w["end"])] + [len(audio) / sr]
        assert bounds == sorted(bounds)
        for w in r["words"]:  # speech inside each word, with its edges within ~10 ms of the bounds
            seg = audio[round(w["start"] * sr): round(w["end"] * sr)]
            loud = np.flatnonzero(np.abs(seg) > 0.01 * np.abs(audio).max())
            assert loud.size and loud[0] < 0.012 * sr and seg.size - loud[-1] < 0.012 * sr
        for a, b in zip([{"end": 0.0}] + r["words"], r["words"] + [{"start": len(audio) / sr}]):
            gap = audio[round(a["end"] * sr) + 1: round(b["start"] * sr) - 1]
            assert np.all(gap == 0)  # nothing but the inserted silence between words
    # deterministic: a fresh run writes identical audio
    assert synthesize_corpus.main(["--text", str(text), "--out", str(tmp_path / "again")]) == 0
    a, _ = sf.read(out / "audio" / "s01_02.flac")
    b, _ = sf.read(tmp_path / "again" / "audio" / "s01_02.flac")
    np.testing.assert_array_equal(a, b)


def test_cli_user_error(tmp_path, capsys):
    assert synthesize_corpus.main(["--text", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "o")]) == 2
    assert "missing.txt" in capsys.readouterr().err
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("un caf\u00e9 noir\n".encode("latin-1"))
    assert synthesize_corpus.main(["--text", str(latin1), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"{latin1}: not UTF-8 text (byte 6" in err and len(err.strip().splitlines()) == 1, err
