"""compat=slamkit interleaving reproduces SlamKit: the document (string + HF tokenizer) token for
token, the unit-span rule at exact boundaries, and the three samplers in distribution through the
static and the dynamic pipeline, against the plain-Python references of
megatron_slm/testing/slamkit_reference.py (written from SlamKit's documented behaviour,
independently of the vectorised code under test)."""
import bisect
import json
from pathlib import Path

import numpy as np
import pytest

from megatron_slm.config import InterleaveConfig, load_config
from megatron_slm.data import interleave as il
from megatron_slm.data import ragged
from megatron_slm.data.spans import speech_masks
from megatron_slm.document import Markers, document_bos
from megatron_slm.data import preprocess as pp
from megatron_slm.data import prepare as prep
from megatron_slm.corpus.alignments import AlignmentIndex
from megatron_slm.testing import slamkit_reference as ref
from megatron_slm.testing.synthetic_units import write_synthetic_corpus
from megatron_slm.units.records import make_meta, read_meta, write_meta
from megatron_slm.vocab import SpeechVocab

from conftest import TOKENIZER

K = 20
BUCKETS = ((4, 10), (11, 20), (21, 40), (41, 80), (81, 160))
PER_BUCKET = (1500, 1200, 600, 300, 150)  # utterances: short ones have few spans each


# ----------------------------------------------------------------------------- helpers


def runs_of(mask):
    return [b - a for a, b, sp in il.runs(mask) if sp]


def bucket_stats(masks):
    """{bucket: (mean speech fraction per utterance, mean span length)} of masks of many lengths."""
    out = {}
    for lo, hi in BUCKETS:
        sel = [m for m in masks if lo <= len(m) <= hi]
        spans = [x for m in sel for x in runs_of(m)]
        out[(lo, hi)] = (float(np.mean([m.mean() for m in sel])), float(np.mean(spans)), len(sel))
    return out


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module", autouse=True)
def process_group(gloo_group):
    yield


@pytest.fixture(scope="module")
def vocab():
    return SpeechVocab.from_pretrained(str(TOKENIZER), num_units=K)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Utterances of every length bucket; every 3rd one with word times exactly on run end times,
    every 3rd + 1 with 20 ms words (often between two run ends: spans without units)."""
    root = tmp_path_factory.mktemp("slamkit")
    parts = [write_synthetic_corpus(str(root), n=m, k=K, words=b, seed=i, name=f"b{i}_")
             for i, (b, m) in enumerate(zip(BUCKETS, PER_BUCKET))]
    units = [json.loads(x) for c in parts for x in Path(c.units).read_text().splitlines()]
    aligns = [json.loads(x) for c in parts for x in Path(c.alignments).read_text().splitlines()]
    for a, u in zip(aligns[::3], units[::3]):
        ends = np.cumsum(u["durations"]) * u["unit_seconds"]
        t = np.array([[w["start"], w["end"]] for w in a["words"]]).ravel()
        i = np.clip(np.searchsorted(ends, t), 1, len(ends) - 1)
        t = np.maximum.accumulate(np.where(ends[i] - t < t - ends[i - 1], ends[i], ends[i - 1]))  # nearest end time
        for w, (start, end) in zip(a["words"], t.reshape(-1, 2).tolist()):
            w["start"], w["end"] = start, end
    for a in aligns[1::3]:
        for w in a["words"]:
            mid = (w["start"] + w["end"]) / 2
            w["start"], w["end"] = mid - 0.01, mid + 0.01
    c = parts[0]
    Path(c.units).write_text("".join(json.dumps(u) + "\n" for u in units))
    Path(c.alignments).write_text("".join(json.dumps(a) + "\n" for a in aligns))
    return c


def _records(c):
    return [(f"units:{i + 1}", json.loads(x)) for i, x in enumerate(Path(c.units).read_text().splitlines())]


# ----------------------------------------------------------------------------- the document


def test_document_equals_slamkit_string_then_tokenizer(corpus, vocab):
    """Given word modalities, the vectorised preparation + assembly give exactly the ids SlamKit's
    interleaved string gets from the HF tokenizer (plus EOD, the packing separator this
    tokenizer does not add), for all-text, all-speech and mixed documents."""
    align = AlignmentIndex(corpus.alignments)
    records = _records(corpus)[::7]
    kept, batch, _, errors = prep.prepare_batch(records, vocab, align, "slamkit")
    assert not errors and len(kept) == len(records)
    rng = np.random.default_rng(0)
    n = batch.num_words
    masks = [rng.random(k) < rng.uniform(0.1, 0.9) for k in n]
    masks[0][:], masks[1][:] = True, False
    masks[2][:] = np.arange(n[2]) % 2 == 0  # a switch at every word: many spans without units
    bos = document_bos(vocab, True, "slamkit")
    assert bos and vocab.added_specials() == ([vocab.bos], [])
    mk = Markers(vocab.speech_id, vocab.text_id, vocab.bos, vocab.eod)
    runs = il.batch_runs(batch, np.concatenate(masks), keep_empty=True)
    ids, offsets = il.assemble_batch(batch, runs, mk)
    empty_spans = 0
    for d, (where, obj) in enumerate(records):
        al = align.get(obj["id"])
        words, starts, ends = [w.strip() for w in al.words], al.starts, al.ends
        want = ref.document_ids(vocab.tokenizer, words, starts, ends, masks[d], obj["durations"], obj["units"],
                                obj["unit_seconds"])
        got = ids[offsets[d]:offsets[d + 1]]
        assert got[-1] == vocab.eod and got[:-1].tolist() == want, obj["id"]
        # the per-record reference path gives the same document
        u, _ = prep.prepare_interleaved(obj, where, vocab, align, "slamkit")
        assert np.array_equal(il.assemble(u, masks[d], mk, keep_empty=True), got)
        empty_spans += sum(1 for a, b, sp in il.runs(masks[d]) if sp and u.hi[b - 1] <= u.lo[a])
    assert empty_spans > 0  # the marker-only spans were exercised


@pytest.mark.parametrize("T", [0.04, 0.02, 1 / 30])
def test_vectorised_unit_span_rule_is_exact_at_run_end_times(T):
    """The shard-wide integer search equals bisect on float cumsum(durations) * T, also for word
    times equal to a run's end time (where one ulp decides)."""
    rng = np.random.default_rng(1)
    R = 50
    n_units = rng.integers(1, 80, R)
    durations = rng.integers(1, 6, int(n_units.sum()))
    useg = np.repeat(np.arange(R), n_units)
    ends_per = np.split(interleave_ends := ragged.segment_cumsum(durations, useg), np.cumsum(n_units)[:-1])
    n_words = rng.integers(1, 30, R)
    starts, ends = [], []
    for r in range(R):
        t = np.sort(rng.choice(ends_per[r], 2 * n_words[r])) * T  # exact run end times ...
        t[::3] += rng.uniform(-0.5, 0.5, len(t[::3])) * T           # ... and some in between
        t = np.maximum.accumulate(np.maximum(t, 0.0))
        starts.append(t[0::2])
        ends.append(t[1::2])
    starts, ends = np.concatenate(starts), np.concatenate(ends)
    arrays = dict(useg=useg, wseg=np.repeat(np.arange(R), n_words), durations=durations, starts=starts, ends=ends,
                  n_units=n_units, n_words=n_words)
    lo, hi = prep._word_unit_ranges(arrays, np.full(R, T), "slamkit")
    w0 = np.cumsum(n_words) - n_words
    for r in range(R):
        times = list(ends_per[r] * T)
        for w in range(w0[r], w0[r] + n_words[r]):
            assert lo[w] == bisect.bisect_left(times, starts[w]) and hi[w] == bisect.bisect_right(times, ends[w])
    assert len(interleave_ends) == len(durations)


# ----------------------------------------------------------------------------- the samplers


def _spy_masks(monkeypatch):
    """Record the word modalities every draw of the real pipeline produces."""
    seen = []
    real = il.batch_runs

    def spy(b, masks, keep_empty=False):
        seen.extend(np.split(np.asarray(masks), b.word_starts[1:-1]) if len(b.keys) else [])
        return real(b, masks, keep_empty)

    monkeypatch.setattr(il, "batch_runs", spy)
    return seen


def _reference_masks(lengths, method, rng, repeat):
    draw = {"poisson": lambda k: ref.poisson_words(k, 10, 0.3, rng), "span": lambda k: ref.span_words(k, 0.1, 10, rng),
            "random": lambda k: ref.random_words(k, rng)}[method]
    return [draw(int(k)) for k in lengths for _ in range(repeat)]


def _assert_close(ours, want, what):
    for b in BUCKETS:
        (f, s, n), (rf, rs, _) = ours[b], want[b]
        assert abs(f - rf) <= 0.02 and abs(s / rs - 1) <= 0.05, (what, b, n, ours[b], want[b])


def test_static_and_dynamic_samplers_match_slamkit(corpus, vocab, tmp_path, monkeypatch):
    """Speech fraction (+-0.02) and mean span length (+-5%) per utterance-length bucket: the
    static preprocessing draw and the dynamic dataset's per-epoch draws against SlamKit's
    sampler run on the same utterance lengths."""
    from megatron_slm.data.blend import build_datasets

    lengths = [len(a["words"]) for a in map(json.loads, Path(corpus.alignments).read_text().splitlines())]
    rng = np.random.default_rng(5)
    want = bucket_stats(_reference_masks(lengths, "poisson", rng, 5))
    assert want[(4, 10)][0] > 0.6 and want[(81, 160)][0] < 0.36  # SlamKit overshoots eta on short utterances

    seen = _spy_masks(monkeypatch)
    base = dict(tokenizer=str(TOKENIZER), inputs=[corpus.units], alignments=corpus.alignments, progress=False, shard_lines=500)
    for seed in range(3):  # one draw per utterance and static dataset
        pp.run(pp.PreprocessJob(kind="interleaved", out_prefix=str(tmp_path / f"static{seed}"), seed=seed, **base))
    assert len(seen) == 3 * len(lengths)
    _assert_close(bucket_stats(list(seen)), want, "static")

    pp.run(pp.PreprocessJob(kind="interleaved", out_prefix=str(tmp_path / "dyn"), mode="dynamic", seed=1, **base))
    seen.clear()
    cfg = load_config(None, ["data.source=blend", "train.seq_length=512", "train.seed=9", "data.split=100,0,0",
                             "data.mode=dynamic", f"data.cache_dir={tmp_path / 'cache'}",
                             f"data.blend=[{{path: {tmp_path / 'dyn'}, weight: 1, kind: interleaved}}]"])
    splits = build_datasets(cfg, vocab, 2500, 0, 0)  # several epochs: each drawn afresh
    epochs = int(np.asarray(splits.train.datasets[0].document_index).max()) // len(lengths) + 1
    assert epochs >= 3 and len(seen) >= 3 * len(lengths)
    _assert_close(bucket_stats(list(seen)), want, "dynamic")


@pytest.mark.parametrize("method", ["span", "random"])
def test_span_and_random_methods_match_slamkit(method):
    lengths = np.repeat([8, 15, 30, 60, 120], 400)
    cfg = InterleaveConfig(method=method, span_prob=0.1, span_words=10, compat="slamkit")
    flat = speech_masks(lengths, np.arange(len(lengths)), cfg, 3, 1)
    ours = bucket_stats(np.split(flat, np.cumsum(lengths)[:-1]))
    want = bucket_stats(_reference_masks(lengths[::400], method, np.random.default_rng(2), 1500))
    _assert_close(ours, want, method)


def test_poisson_law_with_the_exact_fallback_only(monkeypatch):
    """The rounds that find no accepted draw among the proposals use the exact law of accepted
    draws: with no proposals at all, that path alone still matches SlamKit."""
    from megatron_slm.data import slamkit_sampling as sk

    lengths = np.repeat([6, 12, 30, 70, 150], 300)
    want = bucket_stats(_reference_masks(lengths[::300], "poisson", np.random.default_rng(3), 1200))
    monkeypatch.setattr(sk, "PROPOSALS", 0)
    flat = speech_masks(lengths, np.arange(len(lengths)), InterleaveConfig(compat="slamkit"), 4, 0)
    _assert_close(bucket_stats(np.split(flat, np.cumsum(lengths)[:-1])), want, "weighted only")


# ----------------------------------------------------------------------------- conventions


def test_conventions_are_recorded_and_never_mixed_silently(corpus, vocab, tmp_path):
    from megatron_slm.config import ConfigError
    from megatron_slm.data.blend import dataset_config

    base = dict(tokenizer=str(TOKENIZER), alignments=corpus.alignments, progress=False, shard_lines=500)
    meta = pp.run(pp.PreprocessJob(kind="interleaved", inputs=[corpus.units], out_prefix=str(tmp_path / "sk"), **base))
    assert meta["compat"] == "slamkit" and meta["identity"]["units"]["compat"] == "slamkit" and meta["add_bos"]
    # units made before the switch (no field): compat none; refused by a slamkit interleaving
    old = tmp_path / "old_units.jsonl"
    old.write_text(Path(corpus.units).read_text())
    legacy = read_meta(corpus.units)
    legacy.pop("compat")
    write_meta(old, legacy)
    with pytest.raises(pp.PreprocessError, match="compat=slamkit but the units .* follows compat=none"):
        pp.run(pp.PreprocessJob(kind="interleaved", inputs=[str(old)], out_prefix=str(tmp_path / "x"), **base))
    none = pp.run(pp.PreprocessJob(kind="interleaved", inputs=[str(old)], out_prefix=str(tmp_path / "none"),
                                   interleave=InterleaveConfig(compat="none"), **base))
    assert none["compat"] == "none"
    mixed = pp.run(pp.PreprocessJob(kind="interleaved", inputs=[str(old)], out_prefix=str(tmp_path / "mixed"),
                                    interleave=InterleaveConfig(allow_mixed_compat=True), **base))
    assert mixed["compat"] == "slamkit" and mixed["identity"]["units"]["compat"] == "none"
    speech = pp.run(pp.PreprocessJob(kind="speech", inputs=[str(old)], out_prefix=str(tmp_path / "sp"), progress=False,
                                     tokenizer=str(TOKENIZER)))
    assert speech["compat"] == "none"

    def blend(*names, extra=()):
        items = ",".join(f"{{path: {tmp_path / n}, weight: 1}}" for n in names)
        return load_config(None, ["data.source=blend", f"data.blend=[{items}]", *extra])

    dataset_config(blend("sk"), vocab)
    dataset_config(blend("none", "sp", extra=["data.interleave.compat=none"]), vocab)
    with pytest.raises(ConfigError, match="allow_mixed_compat"):
        dataset_config(blend("sk", "none"), vocab)
    with pytest.raises(ConfigError, match="follows compat=slamkit but .* follows compat=none"):
        dataset_config(blend("mixed"), vocab)
    dataset_config(blend("sk", "none", extra=["data.interleave.allow_mixed_compat=true"]), vocab)
    # the run plan refuses before any model is built, with the same override
    from megatron_slm.training.plan import check_blend

    with pytest.raises(ConfigError, match="allow_mixed_compat"):
        check_blend(blend("sk", "none"), vocab)
    assert check_blend(blend("sk", "none", extra=["data.interleave.allow_mixed_compat=true"]), vocab)["compat"] == "slamkit"
    # dynamic data is drawn with data.interleave.compat: it must be the dataset's
    pp.run(pp.PreprocessJob(kind="interleaved", inputs=[corpus.units], out_prefix=str(tmp_path / "dyn"), mode="dynamic",
                            **base))
    with pytest.raises(ConfigError, match="data.interleave.compat"):
        dataset_config(blend("dyn", extra=["data.interleave.compat=none"]), vocab)
    # a sidecar written before the field existed reads as none
    side = tmp_path / "sp.meta.json"
    obj = json.loads(side.read_text())
    obj.pop("compat")
    side.write_text(json.dumps(obj))
    dataset_config(blend("none", "sp", extra=["data.interleave.compat=none"]), vocab)


def test_units_compat_is_part_of_the_units_identity():
    from megatron_slm.units.records import compatibility_key, with_compat

    ext = {"name": "hubert", "layer": 11, "frame_rate": 25.0}
    a = make_meta(ext, 500, "s", None, True, compat="slamkit")
    b = make_meta(ext, 500, "s", None, True, compat="none")
    assert compatibility_key(a) != compatibility_key(b)
    legacy = dict(b)
    legacy.pop("compat")
    assert compatibility_key(legacy) == compatibility_key(b)
    stored = compatibility_key(b)
    stored.pop("compat")  # a key written into a dataset sidecar before the field existed
    assert with_compat(stored) == compatibility_key(b)
