"""Interleaving: span statistics, word boundaries, units inside time ranges, sequence assembly.
The project's own rules (compat=none) here; SlamKit's (compat=slamkit) in test_data_slamkit.py."""
import numpy as np
import pytest

from megatron_slm.config import InterleaveConfig
from megatron_slm.data import interleave as il
from megatron_slm.data.draws import document_key, poisson_ppf, uniforms
from megatron_slm.data.spans import select_speech_words, speech_masks
from megatron_slm.document import Markers
from megatron_slm.units.records import dedup, expand

MK = Markers(speech=1000, text=1001, bos=1, eod=2)


def _span_lengths(mask):
    return [b - a for a, b, sp in il.runs(mask) if sp]


def test_poisson_hits_speech_fraction_and_mean_span_length():
    cfg = InterleaveConfig(method="poisson", mean_span_words=10.0, speech_fraction=0.3, compat="none")
    spoken = total = 0
    spans = []
    for doc in range(300):
        n = 400
        mask = select_speech_words(n, doc, cfg, 7, 0)
        spoken += int(mask.sum())
        total += n
        spans += _span_lengths(mask)
    assert abs(spoken / total - 0.3) <= 0.02
    assert abs(np.mean(spans) - 10.0) <= 1.0  # +-10%


def test_poisson_fraction_on_short_utterances_and_other_settings():
    for eta, lam, n in ((0.3, 10, 14), (0.5, 3, 20), (0.1, 5, 60)):
        cfg = InterleaveConfig(method="poisson", mean_span_words=lam, speech_fraction=eta, compat="none")
        masks = speech_masks(np.full(2000, n), np.arange(2000), cfg, 1, 0).reshape(2000, n)
        assert abs(np.mean([m.mean() for m in masks]) - eta) <= 0.02, (eta, lam, n)


def test_poisson_edge_fractions():
    def one(n, lam, eta, key=0):
        return select_speech_words(n, key, InterleaveConfig(mean_span_words=lam, speech_fraction=eta, compat="none"), 0, 0)

    assert not one(10, 10, 0.0).any()
    assert one(10, 10, 1.0).all()
    assert one(0, 10, 0.3).size == 0
    for key in range(50):  # many spans, few gaps: spans merge, still a valid mask with the right count
        m = one(5, 1.0, 0.99, key)
        assert m.dtype == bool and m.size == 5 and m.sum() in (4, 5)
    # spans never touch: each drawn span stays visible as its own run
    masks = speech_masks(np.full(500, 30), np.arange(500), InterleaveConfig(mean_span_words=2.0, speech_fraction=0.5, compat="none"), 0, 0)
    assert all(m.sum() == sum(_span_lengths(m)) for m in masks.reshape(500, 30))


@pytest.mark.parametrize("compat", ["none", "slamkit"])
def test_batched_draws_equal_one_document_draws_in_any_batch(compat):
    """A document's draw depends on (seed, epoch, key, n) only: not on its batch or position."""
    rng = np.random.default_rng(0)
    n, keys = rng.integers(0, 80, 400), rng.integers(0, 2**31 - 1, 400)
    for cfg in (InterleaveConfig(compat=compat), InterleaveConfig(method="span", span_prob=0.2, span_words=3, compat=compat),
                InterleaveConfig(method="random", word_prob=0.3, compat=compat)):
        flat = speech_masks(n, keys, cfg, 11, 2)
        parts = np.split(flat, np.cumsum(n)[:-1])
        perm = rng.permutation(400)
        shuffled = np.split(speech_masks(n[perm], keys[perm], cfg, 11, 2), np.cumsum(n[perm])[:-1])
        for i in (0, 7, 123, 399):
            one = select_speech_words(int(n[i]), int(keys[i]), cfg, 11, 2)
            assert np.array_equal(one, parts[i]) and np.array_equal(one, shuffled[int(np.flatnonzero(perm == i)[0])])


def test_uniforms_are_uniform_and_streams_independent():
    u = uniforms(1, 0, 0, np.arange(100000), np.zeros(100000))
    assert 0.0 <= u.min() and u.max() < 1.0 and abs(u.mean() - 0.5) < 0.005
    assert np.histogram(u, bins=10, range=(0, 1))[0].min() > 9500
    v = uniforms(1, 0, 1, np.arange(100000), np.zeros(100000))
    assert abs(np.corrcoef(u, v)[0, 1]) < 0.01
    lam = 9.0
    draws = poisson_ppf(u, lam)
    assert abs(draws.mean() - lam) < 0.05 and abs(draws.var() - lam) < 0.2


def test_span_and_random_methods():
    cfg = InterleaveConfig(method="random", word_prob=0.4, compat="none")
    frac = speech_masks(np.full(200, 200), np.arange(200), cfg, 3, 0).mean()
    assert abs(frac - 0.4) < 0.02
    cfg = InterleaveConfig(method="span", span_prob=0.05, span_words=4, compat="none")
    mask = select_speech_words(5000, 0, cfg, 3, 0)
    lengths = _span_lengths(mask)
    # spans are 4 words; two spans may touch and read as one longer span
    assert all(length % 4 == 0 or length == lengths[-1] for length in lengths) and mask.any()


@pytest.mark.parametrize("compat", ["none", "slamkit"])
def test_draws_are_seeded_by_seed_epoch_key(compat):
    cfg = InterleaveConfig(compat=compat)
    a = select_speech_words(100, 5, cfg, 1, 0)
    assert np.array_equal(a, select_speech_words(100, 5, cfg, 1, 0))
    others = [select_speech_words(100, k, cfg, s, e) for s, e, k in ((2, 0, 5), (1, 1, 5), (1, 0, 6))]
    assert all(not np.array_equal(a, o) for o in others)
    assert document_key("utt-1") == document_key("utt-1") != document_key("utt-2")


def _run_table_length(u, mask, keep_empty=False):
    """The document length the vectorised run table gives (what the dynamic dataset packs by)."""
    batch = il.PreparedBatch.from_utterances([u])
    runs = il.batch_runs(batch, mask, keep_empty)
    return 2 + len(runs.src) + int(runs.length.sum())  # BOS, EOD, a marker per run


def _random_utterance(rng, n_words=30, T=0.04):
    """Words with gaps, and frame-level units deduplicated into runs."""
    gaps = rng.uniform(0.0, 0.3, n_words)
    lens = rng.uniform(0.05, 0.6, n_words)
    starts = np.cumsum(gaps + np.concatenate(([0], lens[:-1])))
    ends = starts + lens
    n_frames = int(np.ceil((ends[-1] + 0.3) / T))
    frames = np.repeat(rng.integers(0, 50, n_frames // 2 + 1), 2)[:n_frames]  # runs of 2+ frames
    units, durations = dedup(frames)
    return starts, ends, np.asarray(units), np.asarray(durations), frames


def test_units_of_a_span_are_exactly_those_in_its_time_range():
    rng = np.random.default_rng(0)
    T = 0.04
    for _ in range(20):
        starts, ends, units, durations, frames = _random_utterance(rng, T=T)
        lo, hi = il.word_unit_ranges(starts, ends, durations, T, "none")
        assert expand(units, durations) == frames.tolist()
        for _ in range(20):
            i = int(rng.integers(0, len(starts)))
            j = int(rng.integers(i, len(starts)))
            centres = (np.arange(len(frames)) + 0.5) * T
            inside = frames[(centres >= starts[i]) & (centres <= ends[j])]
            expected, _ = dedup(inside)
            got = units[lo[i]:hi[j]].tolist() if hi[j] > lo[i] else []
            assert got == expected


def test_assemble_modality_tokens_and_word_boundaries():
    words = [[10], [11, 12], [13], [14], [15, 16]]
    unit_ids = np.array([500, 501, 502, 503, 504, 505])
    lo, hi = np.array([0, 1, 2, 3, 5]), np.array([1, 2, 3, 5, 6])
    u = il.prepare(42, words, unit_ids, lo, hi)
    mask = np.array([False, True, True, False, False])
    doc = il.assemble(u, mask, MK)
    assert doc.tolist() == [1, 1001, 10, 1000, 501, 502, 1001, 14, 15, 16, 2]
    assert _run_table_length(u, mask) == len(doc)
    # all text == the plain tokenisation; all speech == the aligned units; no BOS when None
    assert il.assemble(u, np.zeros(5, bool), MK).tolist() == [1, 1001, 10, 11, 12, 13, 14, 15, 16, 2]
    no_bos = Markers(1000, 1001, None, 2)
    assert il.assemble(u, np.ones(5, bool), no_bos).tolist() == [1000, 500, 501, 502, 503, 504, 505, 2]


def test_speech_span_without_units_becomes_text():
    u = il.prepare(1, [[10], [11], [12]], np.array([500, 501]), np.array([0, 1, 1]), np.array([1, 1, 2]))
    mask = np.array([False, True, False])  # word 1 has no frames
    doc = il.assemble(u, mask, MK)
    assert doc.tolist() == [1, 1001, 10, 11, 12, 2]
    assert _run_table_length(u, mask) == len(doc)
    # SlamKit's layout keeps the span's marker, with nothing after it
    doc = il.assemble(u, mask, MK, keep_empty=True)
    assert doc.tolist() == [1, 1001, 10, 1000, 1001, 12, 2]
    assert _run_table_length(u, mask, keep_empty=True) == len(doc)


@pytest.mark.parametrize("compat", ["none", "slamkit"])
@pytest.mark.parametrize("method", ["poisson", "span", "random"])
def test_run_table_length_and_markers_for_every_method(method, compat):
    rng = np.random.default_rng(1)
    starts, ends, units, durations, _ = _random_utterance(rng, 40)
    lo, hi = il.word_unit_ranges(starts, ends, durations, 0.04, compat)
    u = il.prepare(3, [[i, i + 1] for i in range(40)], units + 500, lo, hi)
    cfg = InterleaveConfig(method=method, span_prob=0.2, span_words=3, compat=compat)
    keep = compat == "slamkit"
    for epoch in range(10):
        mask = il.draw(u, cfg, 0, epoch)
        doc = il.assemble(u, mask, MK, keep)
        assert len(doc) == _run_table_length(u, mask, keep)
        # a modality marker at the start and at every switch, none elsewhere
        markers = np.flatnonzero((doc == 1000) | (doc == 1001))
        assert markers[0] == 1
        assert len(markers) == len(il.effective_runs(u, mask, keep))


@pytest.mark.parametrize("compat", ["none", "slamkit"])
@pytest.mark.parametrize("method", ["poisson", "span", "random"])
def test_batch_assembly_equals_one_document_assembly(method, compat):
    rng = np.random.default_rng(1)
    utts = []
    for d in range(200):
        n, nu = int(rng.integers(1, 40)), int(rng.integers(0, 60))
        lo = np.sort(rng.integers(0, nu + 1, n))
        hi = np.maximum.accumulate(np.minimum(lo + rng.integers(0, 4, n), nu))  # some words own no units
        utts.append(il.prepare(d * 7 + 1, [list(rng.integers(3, 100, int(rng.integers(1, 4)))) for _ in range(n)],
                               rng.integers(500, 600, nu), lo, hi))
    cfg = InterleaveConfig(method=method, compat=compat)
    batch = il.PreparedBatch.from_utterances(utts)
    for mk in (MK, Markers(speech=1000, text=1001, bos=None, eod=2)):
        ids, offsets = il.assemble_batch(batch, il.draw_batch(batch, cfg, 3, 1), mk)
        assert len(offsets) == len(utts) + 1
        for i, u in enumerate(utts):
            assert np.array_equal(ids[offsets[i]:offsets[i + 1]],
                                  il.assemble(u, il.draw(u, cfg, 3, 1), mk, keep_empty=compat == "slamkit"))
