"""tools/make_story_corpus.py: generated stories, espeak-ng speech, splits by story, cache."""
import json
import shutil
import time

import numpy as np
import pytest
import soundfile as sf

from megatron_slm.commands import make_story_corpus
from megatron_slm.corpus.story_corpus import DEFAULT_VOICES, CorpusSpec, build_corpus, cached_manifest, spoken_stories
from megatron_slm.corpus.stories import HEROES, PLOTS, distractor_ending, generate_story, lexicon, split_of
from megatron_slm.jsonio import iter_jsonl
from megatron_slm.outputs import MARKER

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")

# ~8 stories: small fractions would leave a split empty
SPEC = CorpusSpec(hours=0.04, seed=3, valid_fraction=0.25, test_fraction=0.35, text_stories=300,
                  voices=DEFAULT_VOICES[:2])


def test_stories_are_deterministic_and_coherent():
    assert generate_story(5, 17).sentences == generate_story(5, 17).sentences
    assert generate_story(5, 17).text != generate_story(6, 17).text
    names = {h.name for h in HEROES}
    stories = [generate_story(0, i) for i in range(300)]
    assert {s.plot for s in stories} == set(PLOTS)
    for s in stories:
        assert 4 <= len(s.sentences) <= 6 and all(x.endswith(".") for x in s.sentences)
        assert s.hero in s.sentences[0] and s.hero in s.ending
        # one hero per story: no other character's name anywhere in it
        assert not [n for n in names - {s.hero} if n in s.text.split() or f"{n}." in s.text or f"{n}," in s.text]
    rng = np.random.default_rng(0)
    for s in stories[:50]:
        other = distractor_ending(s, stories, rng)
        assert other.hero != s.hero and other.plot != s.plot and other.hero in other.ending
    words = lexicon()
    assert 100 < len(words) < 300 and "lily" in words
    # splits hash (seed, index): the same for any corpus size
    splits = [split_of(0, i, 0.06, 0.15) for i in range(2000)]
    assert abs(splits.count("test") / 2000 - 0.15) < 0.03 and abs(splits.count("valid") / 2000 - 0.06) < 0.02


def test_a_smaller_corpus_is_a_prefix_and_has_no_repeated_story():
    small = spoken_stories(CorpusSpec(hours=0.5), lambda s: 20.0)
    large = spoken_stories(CorpusSpec(hours=2.0), lambda s: 20.0)
    assert len(small) == 90 and len(large) == 360
    assert [(s.id, s.text, s.split) for s in small] == [(s.id, s.text, s.split) for s in large[:90]]
    assert len({s.text for s in large}) == len(large)


def test_build_corpus_layout_alignments_storycloze_and_cache(tmp_path):
    out = tmp_path / "stories"
    m = build_corpus(out, SPEC, progress=False)
    assert not m["cached"] and m["params"] == SPEC.params()
    counts = m["stories"]
    assert all(counts[s] >= 1 for s in ("train", "valid", "test"))
    assert m["data_split"] == f"{counts['train']},{counts['valid']},{counts['test']}"
    records = [r for _, r in iter_jsonl(out / "alignments.jsonl")]
    # train, then valid, then test: data.split=<data_split> gives the trainer exactly these splits
    assert [r["split"] for r in records] == sorted((r["split"] for r in records), key=["train", "valid", "test"].index)
    for split in ("train", "valid", "test"):
        assert [r["id"] for _, r in iter_jsonl(out / f"alignments.{split}.jsonl")] == \
               [r["id"] for r in records if r["split"] == split]
    total = 0.0
    for r in records:
        audio, sr = sf.read(out / r["audio"])
        total += audio.size / sr
        assert sr == 16000 and " ".join(w["word"] for w in r["words"]) == r["text"]
        ends = [(w["start"], w["end"]) for w in r["words"]]
        assert all(a < b for a, b in ends) and all(b1 <= a2 for (_, b1), (a2, _) in zip(ends, ends[1:]))
        assert ends[-1][1] <= audio.size / sr
        # exact alignments: speech inside words, silence in the gaps between them
        first = r["words"][0]
        assert np.abs(audio[: int(first["start"] * sr) - 1]).max() == 0
        assert np.abs(audio[int(first["start"] * sr): int(first["end"] * sr)]).max() > 0.05
    assert total >= SPEC.hours * 3600 and sum(m["seconds"].values()) == pytest.approx(total, abs=0.01)

    stories = {r["id"]: r for _, r in iter_jsonl(out / "stories.jsonl")}
    pairs = [r for _, r in iter_jsonl(out / "ssc" / "pairs.jsonl")]
    assert len(pairs) == counts["test"] == m["storycloze_items"]
    for p in pairs:
        story, other = stories[p["id"]], stories[p["ending_from"]]
        assert story["split"] == other["split"] == "test" and story["hero"] != other["hero"]
        right = (out / "ssc" / f"{p['id']}_correct.txt").read_text().strip()
        wrong = (out / "ssc" / f"{p['id']}_incorrect.txt").read_text().strip()
        prompt = " ".join(story["sentences"][:-1])
        assert right == f"{prompt} {story['sentences'][-1]}" and wrong == f"{prompt} {other['sentences'][-1]}"
        a, _ = sf.read(out / "ssc" / f"{p['id']}_correct.flac")
        b, _ = sf.read(out / "ssc" / f"{p['id']}_incorrect.flac")
        # the same prompt audio in both candidates: only the ending differs
        n = sum(len(s.split()) for s in story["sentences"][:-1])  # words of the prompt
        words = next(r for _, r in iter_jsonl(out / "alignments.test.jsonl") if r["id"] == p["id"])["words"]
        cut = int(words[n - 1]["end"] * 16000)
        assert np.array_equal(a[:cut], b[:cut]) and not np.array_equal(a, b)
    held_out = {" ".join(s["sentences"]) for s in stories.values() if s["split"] != "train"}
    texts = [r["text"] for _, r in iter_jsonl(out / "text_stories.jsonl")]
    assert len(texts) == 300 and not held_out & set(texts)

    # cached: the second build returns at once; another parameter, a missing or changed file rebuilds
    t0 = time.perf_counter()
    again = build_corpus(out, SPEC, progress=False)
    assert again["cached"] and again["content_sha256"] == m["content_sha256"] and time.perf_counter() - t0 < 1.0
    assert cached_manifest(out, CorpusSpec(**{**SPEC.__dict__, "seed": 4})) is None
    victim = out / records[0]["audio"]
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF  # same size, other content: only --verify notices
    victim.write_bytes(bytes(data))
    assert cached_manifest(out, SPEC) is not None and cached_manifest(out, SPEC, verify=True) is None
    (out / MARKER).write_text('{"written": "by a later run"}')  # a run stamp, not content
    rebuilt = build_corpus(out, SPEC, progress=False, verify=True)
    assert not rebuilt["cached"] and rebuilt["content_sha256"] == m["content_sha256"]  # deterministic
    (out / "ssc" / f"{pairs[0]['id']}_incorrect.txt").unlink()
    assert cached_manifest(out, SPEC) is None


def test_cli_summary_and_errors(tmp_path, capsys):
    assert make_story_corpus.main(["--out", str(tmp_path / "c"), "--hours", "-1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--hours" in err
    assert make_story_corpus.main(["--out", str(tmp_path / "c"), "--hours", "0.01", "--voices", "1", "--quiet"]) == 2
    assert "split got no story" in capsys.readouterr().err
