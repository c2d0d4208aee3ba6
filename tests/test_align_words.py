"""Word alignment by CTC: emissions with known word frames give exact times (silence between
words, an absent word reported), windows of a long file agree with one pass, and the tool runs
end to end on a tiny random CTC model (JSONL and Lhotse, resume) and on the bundled corpus with a
model fitted in the test."""
import json

import numpy as np
import pytest

from megatron_slm.align import ctc
from megatron_slm.align.aligner import WordAligner
from megatron_slm.commands import align_words

from conftest import CORPUS

ALIGN = CORPUS / "alignments.jsonl"
V = 12
WORDS = {"cat": [2, 3, 4], "dog": [5, 6, 7], "see": [8, 9, 9], "go": [7, 6], "x": [11]}


def emissions(T, segments, p=0.97):
    """Log-probabilities where each (first, end, tokens) segment says its tokens evenly over its
    frames (a blank between repeated tokens) and the blank fills the rest."""
    label = np.zeros(T, dtype=int)
    for a, b, toks in segments:
        edges = np.linspace(a, b, len(toks) + 1).round().astype(int)
        for k, tok in enumerate(toks):
            label[edges[k]:edges[k + 1]] = tok
            if k and toks[k - 1] == tok:
                label[edges[k]] = 0
    probs = np.full((T, V), (1 - p) / (V - 1))
    probs[np.arange(T), label] = p
    return np.log(probs)


def _spans(result):
    return [(s.start, s.end) if s else None for s in result]


def test_known_frames_give_exact_word_spans():
    logp = emissions(70, [(5, 14, WORDS["cat"]), (22, 34, WORDS["see"]), (45, 57, WORDS["dog"])])
    got = ctc.align(logp, [WORDS[w] for w in ("cat", "see", "dog")], blank=0)
    assert _spans(got) == [(5, 14), (22, 34), (45, 57)]
    assert all(s.confidence == pytest.approx(0.97) for s in got)
    # words absent from the audio (first, middle, last) get no frames, the others stay exact
    got = ctc.align(logp, [WORDS[w] for w in ("go", "cat", "go", "see", "dog", "go")], blank=0)
    assert _spans(got) == [None, (5, 14), None, (22, 34), (45, 57), None]
    # a one-token absent word is cheaper to force than to skip, but its confidence tells
    got = ctc.align(logp, [WORDS[w] for w in ("cat", "x", "see", "dog")], blank=0)
    assert _spans(got)[0] == (5, 14) and _spans(got)[2:] == [(22, 34), (45, 57)] and got[1].confidence < 0.01
    # a free end stops after the last word the audio holds
    assert _spans(ctc.align(logp[:40], [WORDS[w] for w in ("cat", "see", "dog")], 0, free_end=True)) == \
        [(5, 14), (22, 34), None]
    # more tokens than frames: nothing is placed
    assert ctc.align(logp[:4], [WORDS["cat"], WORDS["dog"]], 0) == [None, None]


class FrameModel:
    """A stand-in CTC model: emissions are slices of a fixed matrix (one frame per 320 samples)."""

    sample_rate, frame_seconds, blank = 16000, 0.02, 0

    def __init__(self, logp):
        self.logp, self.calls = logp, []

    def word_tokens(self, word):
        return WORDS.get(word.strip(",.").lower(), [])

    def emissions(self, waves):
        self.calls.append(len(waves))
        out = []
        for w in waves:  # the wave's samples carry their absolute frame index
            first = int(w[0]) // 320
            out.append(self.logp[first: first + len(w) // 320])
        return out


def test_windows_of_a_long_file_agree_with_one_pass():
    rng = np.random.default_rng(0)
    segments, words, t = [], [], 10
    while t < 2900:  # about 58 s of speech at 50 frames/s
        w = ["cat", "see", "dog", "go"][int(rng.integers(4))]
        n = int(rng.integers(8, 20))
        segments.append((t, t + n, WORDS[w]))
        words.append(w)
        t += n + int(rng.integers(3, 30))
    T = t + 10
    logp = emissions(T, segments)
    wave = np.repeat(np.arange(T) * 320, 320).astype(np.float32)  # sample i holds its frame's first sample
    assert words[2:4] == ["cat", "go"]
    words_with_absent = words[:3] + ["Dog,"] + words[3:]  # an extra word the audio does not have
    truth = [(a * 0.02, b * 0.02) for a, b, _ in segments]
    model = FrameModel(logp)
    (res,) = WordAligner(model, window_seconds=8.0, margin_seconds=1.0).align([("long", wave, words_with_absent)])
    assert len(model.calls) > 7  # aligned window by window
    assert np.allclose([(w.start, w.end) for w in res.words], truth, atol=1e-9)
    assert [(u.index, u.word, u.reason) for u in res.unplaced] == [(3, "Dog,", "not_found")]
    assert [w.index for w in res.words] == [i for i in range(len(words_with_absent)) if i != 3]
    # one pass over the whole file gives the same
    (one,) = WordAligner(model, window_seconds=100.0).align([("long", wave, words_with_absent)])
    assert np.allclose([(w.start, w.end) for w in one.words], truth, atol=1e-9)
    # short files go through the model in batches
    model.calls.clear()
    utts = [(f"u{i}", wave[:16000 * 2], words[:2]) for i in range(5)]
    assert len(list(WordAligner(model, window_seconds=8.0, margin_seconds=1.0, batch_size=4).align(utts))) == 5
    assert model.calls == [4, 1]


@pytest.fixture(scope="module")
def random_ctc(tmp_path_factory):
    from megatron_slm.testing.tiny_ctc import make_tiny_ctc

    return make_tiny_ctc(tmp_path_factory.mktemp("ctc") / "random")


def _transcripts(tmp_path, n=6):
    """Transcripts (no word times) of the first utterances of the corpus, one unspeakable word added."""
    recs = [json.loads(line) for line in ALIGN.read_text().splitlines()[:n]]
    path = tmp_path / "transcripts.jsonl"
    path.write_text("".join(json.dumps({"id": r["id"], "audio": str(CORPUS / r["audio"]),
                                        "text": r["text"] + (" 42" if i == 0 else "")}) + "\n"
                            for i, r in enumerate(recs)))
    return path, recs


def _run(*args):
    return align_words.main([*map(str, args), "--quiet", "--device", "cpu"])


def test_audio_goes_through_the_extraction_screen(tmp_path, random_ctc):
    """A FIFO is skipped (it used to block the reader forever), silent audio is aligned with a warning."""
    import os
    import subprocess
    import sys

    import soundfile as sf

    from conftest import REPO, _env

    rec = json.loads(ALIGN.read_text().splitlines()[0])
    fifo, silent = tmp_path / "fifo.wav", tmp_path / "silent.wav"
    os.mkfifo(fifo)
    sf.write(silent, np.zeros(16000 * 2, dtype=np.float32), 16000)
    src = tmp_path / "transcripts.jsonl"
    src.write_text("".join(json.dumps({"id": i, "audio": str(a), "text": rec["text"]}) + "\n"
                           for i, a in (("ok", CORPUS / rec["audio"]), ("fifo", fifo), ("silent", silent))))
    proc = subprocess.run([sys.executable, REPO / "tools" / "align_words.py", "--input", src, "--model-dir",
                           random_ctc, "--out", tmp_path / "out.jsonl", "--quiet", "--device", "cpu"],
                          env=_env(), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "fifo: audio not a regular file" in proc.stdout, proc.stdout
    assert "silent: silent (all samples zero): kept" in proc.stdout, proc.stdout
    ids = [json.loads(l)["id"] for l in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert ids == ["ok", "silent"]


def test_out_never_replaces_the_input(tmp_path, capsys):
    src = tmp_path / "cuts.jsonl.gz"
    src.write_bytes(b"a Lhotse manifest")
    for out in (src, tmp_path / "model" / "aligned.jsonl"):  # the input, or inside the model directory
        assert _run("--input", src, "--model-dir", tmp_path / "model", "--out", out) == 2
        err = capsys.readouterr().err
        assert "refusing to write" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert src.read_bytes() == b"a Lhotse manifest"


def test_tool_on_a_random_model_jsonl_lhotse_and_resume(tmp_path, random_ctc, capsys):
    pytest.importorskip("lhotse")
    from megatron_slm.corpus.alignments import AlignmentIndex
    from megatron_slm.corpus.words import validate

    src, recs = _transcripts(tmp_path)
    out = tmp_path / "align.jsonl"
    assert _run("--input", src, "--model-dir", random_ctc, "--out", out, "--min-confidence", "0") == 0
    summary = capsys.readouterr().out
    assert "aligned 6 of 6 utterances" in summary and "no_tokens" in summary
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert [g["id"] for g in got] == [r["id"] for r in recs]
    assert got[0]["unaligned"][-1] == {"index": len(recs[0]["words"]), "word": "42", "reason": "no_tokens"}
    index = AlignmentIndex(out)  # what preprocess_data reads, through the shared validator
    for r in recs:
        al = validate(index.get(r["id"]), audio_seconds=r["words"][-1]["end"] + 0.5)
        assert all(0 <= w["confidence"] <= 1 for w in got[[g["id"] for g in got].index(r["id"])]["words"])
        assert len(al.words) <= len(r["words"])
    assert "42\tno_tokens" in (tmp_path / "align.jsonl.unaligned.tsv").read_text()

    # killed mid-write: the truncated last line is dropped and redone, finished ones kept
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:3]) + lines[3][:25])
    assert _run("--input", src, "--model-dir", random_ctc, "--out", out, "--min-confidence", "0") == 0
    assert [json.loads(line) for line in out.read_text().splitlines()] == got

    # a Lhotse CutSet out, and a Lhotse input (cuts with text, no word times) aligned in place
    from lhotse import CutSet

    assert _run("--input", src, "--model-dir", random_ctc, "--out", tmp_path / "cuts.jsonl.gz",
                "--min-confidence", "0") == 0
    cuts = list(CutSet.from_file(tmp_path / "cuts.jsonl.gz"))
    items = cuts[1].supervisions[0].alignment["word"]
    assert [(a.symbol, a.start, round(a.start + a.duration, 5), a.score) for a in items] == \
        [(w["word"], w["start"], w["end"], w["confidence"]) for w in got[1]["words"]]
    from megatron_slm.testing.lhotse_corpus import corpus_cuts

    bare = CutSet.from_cuts(corpus_cuts(str(ALIGN), with_words=False)[:3])
    bare.to_file(tmp_path / "bare.jsonl.gz")
    assert _run("--input", tmp_path / "bare.jsonl.gz", "--model-dir", random_ctc, "--out",
                tmp_path / "aligned.jsonl.gz", "--min-confidence", "0") == 0
    index = AlignmentIndex(tmp_path / "aligned.jsonl.gz")
    assert index.format == "lhotse" and index.ids() == [r["id"] for r in recs[:3]]
    assert index.get(recs[1]["id"]).words == [w["word"] for w in got[1]["words"]]
    # the default confidence floor leaves a random model's guesses out
    assert _run("--input", src, "--model-dir", random_ctc, "--out", tmp_path / "strict.jsonl") == 0
    assert "low_confidence" in capsys.readouterr().out
    # user errors: one line, exit 2
    assert _run("--input", tmp_path / "none.jsonl", "--model-dir", random_ctc, "--out", tmp_path / "x.jsonl") == 2
    (tmp_path / "no_model").mkdir()  # beside the output: an output inside the model dir is refused first
    assert _run("--input", src, "--model-dir", tmp_path / "no_model", "--out", tmp_path / "x.jsonl") == 2
    assert _run("--input", tmp_path / "bare.jsonl.gz", "--model-dir", random_ctc, "--out", tmp_path / "x.jsonl") == 2
    err = capsys.readouterr().err
    assert "none.jsonl" in err and "not a local CTC model" in err and "Lhotse input" in err and "Traceback" not in err


@pytest.mark.slow
def test_fitted_model_finds_the_corpus_word_times(tmp_path):
    """A tiny wav2vec2 fitted for 60 steps to the corpus's own word times (about 35 s on one
    thread) recovers them: most boundaries within 50 ms, far better than a random model."""
    from megatron_slm.testing.tiny_ctc import fit_to_alignments, make_tiny_ctc

    model = make_tiny_ctc(tmp_path / "fit")
    fit_to_alignments(model, str(ALIGN), steps=60)
    out = tmp_path / "align.jsonl"
    assert _run("--input", ALIGN, "--model-dir", model, "--out", out) == 0
    truth = {json.loads(line)["id"]: json.loads(line)["words"] for line in ALIGN.read_text().splitlines()}
    errors, placed = [], 0
    for rec in map(json.loads, out.read_text().splitlines()):
        ref_words = truth[rec["id"]]
        kept = [i for i in range(len(ref_words)) if i not in {u["index"] for u in rec["unaligned"]}]
        placed += len(kept)
        for w, i in zip(rec["words"], kept):
            assert w["word"] == ref_words[i]["word"]
            errors += [abs(w["start"] - ref_words[i]["start"]), abs(w["end"] - ref_words[i]["end"])]
    errors = np.asarray(errors)
    assert placed >= 0.7 * sum(map(len, truth.values()))
    assert np.median(errors) < 0.02 and np.mean(errors < 0.05) > 0.65
