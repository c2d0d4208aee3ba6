"""Alignment readers (canonical JSONL, MFA TextGrid, Whisper JSON) and validation messages; times are
numbers in every format, never converted."""
import json

import numpy as np
import pytest

from megatron_slm.corpus.alignments import AlignmentIndex, detect_format
from megatron_slm.corpus.textgrid import parse_textgrid
from megatron_slm.corpus.words import AlignmentError, validate

LONG_TG = '''File type = "ooTextFile"
Object class = "TextGrid"

xmin = 0
xmax = 1.5
tiers? <exists>
size = 2
item []:
    item [1]:
        class = "IntervalTier"
        name = "phones"
        xmin = 0
        xmax = 1.5
        intervals: size = 1
        intervals [1]:
            xmin = 0
            xmax = 1.5
            text = "HH"
    item [2]:
        class = "IntervalTier"
        name = "words"
        xmin = 0
        xmax = 1.5
        intervals: size = 4
        intervals [1]:
            xmin = 0
            xmax = 0.2
            text = ""
        intervals [2]:
            xmin = 0.2
            xmax = 0.6
            text = "hello"
        intervals [3]:
            xmin = 0.6
            xmax = 1.1
            text = "world"
        intervals [4]:
            xmin = 1.1
            xmax = 1.5
            text = ""
'''

SHORT_TG = '''"ooTextFile"
"TextGrid"
0
1.5
<exists>
1
"IntervalTier"
"words"
0
1.5
3
0
0.2
""
0.2
0.6
"hello"
0.6
1.1
"world"
'''


def test_canonical_jsonl_index_and_problems(tmp_path):
    p = tmp_path / "al.jsonl"
    good = {"id": "a", "audio": "a.wav", "text": "hi there", "words": [{"word": "hi", "start": 0.1, "end": 0.3},
                                                                     {"word": "there", "start": 0.35, "end": 0.8}]}
    p.write_bytes(json.dumps(good).encode() + b"\n{not json\n" + b'{"id": "b", "words": []}\n'
                  + b'{"id": "\xff"}\n' + json.dumps(good).encode() + b"\n\n")
    idx = AlignmentIndex(p)
    assert idx.format == "jsonl" and sorted(idx.ids()) == ["a", "b"]
    al = idx.get("a")
    assert al.words == ["hi", "there"] and np.allclose(al.ends, [0.3, 0.8])
    reasons = [r for r, _ in idx.problems]
    assert reasons == ["malformed_json", "non_utf8", "duplicate_id"]
    assert f"{p}:2" in idx.problems[0][1]
    with pytest.raises(AlignmentError, match="empty transcript") as e:
        validate(idx.get("b"))
    assert e.value.reason == "empty_transcript"


@pytest.mark.parametrize("text", [LONG_TG, SHORT_TG])
def test_textgrid_both_formats(text):
    al = parse_textgrid(text, "utt", "utt.TextGrid")
    assert al.words == ["hello", "world"]
    assert al.starts.tolist() == [0.2, 0.6] and al.ends.tolist() == [0.6, 1.1]


def test_textgrid_dir_and_errors(tmp_path):
    (tmp_path / "u1.TextGrid").write_text(LONG_TG)
    (tmp_path / "u2.TextGrid").write_text(LONG_TG.replace('name = "words"', 'name = "wrds"'))
    (tmp_path / "u3.TextGrid").write_text(LONG_TG[:300])
    idx = AlignmentIndex(tmp_path)
    assert idx.format == "textgrid" and sorted(idx.ids()) == ["u1", "u2", "u3"]
    assert idx.get("u1").words == ["hello", "world"]
    with pytest.raises(AlignmentError, match="u2.TextGrid: no interval tier named 'words'"):
        idx.get("u2")
    with pytest.raises(AlignmentError, match="u3.TextGrid: truncated or malformed"):
        idx.get("u3")


def test_whisper_and_whisperx_json(tmp_path):
    whisper = {"text": " Hello world.", "segments": [{"words": [{"word": " Hello", "start": 0.0, "end": 0.4, "probability": 0.9}]},
                                                      {"words": [{"word": " world.", "start": 0.5, "end": 0.9}]}]}
    whisperx = {"segments": [], "word_segments": [{"word": "Hi", "start": 0.1, "end": 0.2}, {"word": "you", "start": 0.3}]}
    (tmp_path / "w1.json").write_text(json.dumps(whisper))
    (tmp_path / "w2.json").write_text(json.dumps(whisperx))
    (tmp_path / "w3.json").write_text(json.dumps({"text": "no timestamps"}))
    assert detect_format(tmp_path) == "whisper"
    idx = AlignmentIndex(tmp_path)
    assert idx.get("w1").words == ["Hello", "world."]
    with pytest.raises(AlignmentError, match=r"w2.json: word 1 must have 'word', 'start' and 'end'"):
        idx.get("w2")
    with pytest.raises(AlignmentError, match="word timestamps missing"):
        idx.get("w3")


@pytest.mark.parametrize("words,audio,msg,reason", [
    ([("a", 0.5, 0.4)], None, r"word 0 \('a'\): start 0.5 > end 0.4", "invalid_alignment"),
    ([("a", 0.0, 0.4), ("b", 0.3, 0.6)], None, r"word 1 \('b'\): starts at 0.3 before the previous word ends", "invalid_alignment"),
    ([("a", 0.0, 0.4), ("b", 0.5, 2.0)], 1.0, r"word 1 \('b'\): ends at 2.0 s, after the audio", "outside_audio"),
    ([("a", 0.0, 0.4), (" ", 0.5, 0.6)], None, r"word 1 \(''\): empty word", "invalid_alignment"),
])
def test_validation_names_file_and_word(tmp_path, words, audio, msg, reason):
    p = tmp_path / "al.jsonl"
    p.write_text(json.dumps({"id": "x", "words": [{"word": w, "start": s, "end": e} for w, s, e in words]}) + "\n")
    with pytest.raises(AlignmentError, match=msg) as e:
        validate(AlignmentIndex(p).get("x"), audio)
    assert e.value.reason == reason and f"{p}:1" in str(e.value)


def test_missing_path(tmp_path):
    with pytest.raises(AlignmentError, match="no such alignment file"):
        AlignmentIndex(tmp_path / "nope.jsonl")


def test_listing_probing_and_corpus_readers_import_no_torch():
    """Preprocessing and the command line read alignments, list and probe audio: none of that
    may pull in torch, scipy or lhotse (only the decoders and the Lhotse reader's calls do)."""
    import subprocess
    import sys

    mods = ["megatron_slm.corpus." + m for m in ("words", "canonical", "textgrid", "whisper", "lhotse_manifests",
                                                  "alignments", "transcripts", "synth", "story_corpus")]
    mods += ["megatron_slm.audio.sources", "megatron_slm.audio.probe", "megatron_slm.commands.unit_args"]
    code = (f"import sys\nfor m in {mods!r}: __import__(m)\n"
            "print(sorted(h for h in ('torch', 'scipy', 'lhotse', 'megatron') if h in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


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
