"""The Mimi codec behind the speech-tokenizer interface: codes equal `MimiModel.encode` per
utterance (batched or not), extraction through tools/extract_units.py, its sidecar and inventory,
bad input, and the hubert/mel path unchanged (the bundled units, made before tokenizers existed)."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from megatron_slm.audio.decode_soundfile import load_audio
from megatron_slm.commands import extract_units
from megatron_slm.testing.tiny_mimi import save_tiny_mimi
from megatron_slm.units.records import compatibility_key, iter_records, parse_record, read_meta
from megatron_slm.vocab import UnitInventory, VocabError

from conftest import CORPUS, TOKENIZER

AUDIO = sorted(os.path.join(CORPUS, "audio", f) for f in os.listdir(os.path.join(CORPUS, "audio")))[:6]


@pytest.fixture(scope="module")
def mimi_dir(tmp_path_factory):
    return save_tiny_mimi(tmp_path_factory.mktemp("mimi") / "mimi")


@pytest.fixture(scope="module")
def mimi_model(mimi_dir):
    from transformers import MimiModel

    return MimiModel.from_pretrained(mimi_dir, local_files_only=True).eval()


def reference_codes(model, wave: np.ndarray, n_q: int) -> np.ndarray:
    """[F, n_q]: `MimiModel.encode` of one utterance alone."""
    with torch.inference_mode():
        return model.encode(torch.from_numpy(wave)[None, None], num_quantizers=n_q).audio_codes[0].T.numpy()


def test_padded_batch_codes_equal_per_utterance_encode(mimi_model):
    from megatron_slm.units.mimi import MimiCodec

    codec = MimiCodec(mimi_model, 4)
    g = torch.Generator().manual_seed(0)
    # ends inside a frame (before the longest), on a frame boundary, the longest, under one frame
    lengths = [24000, 19200, 30000, 19201, 5000, 1000]
    waves = torch.zeros(len(lengths), max(lengths))
    for i, n in enumerate(lengths):
        waves[i, :n] = torch.randn(n, generator=g) * 0.1
    codes, frames = codec(waves, torch.tensor(lengths))
    assert frames.tolist() == [13, 10, 16, 11, 3, 1]
    with torch.inference_mode():  # the plain padded forward, without our re-encoding of edge frames
        plain = mimi_model.encode(waves[:, None], num_quantizers=4).audio_codes.transpose(1, 2).numpy()
    edge_differs = False
    for i, n in enumerate(lengths):
        ref = reference_codes(mimi_model, waves[i, :n].numpy(), 4)
        assert ref.shape == (int(frames[i]), 4)
        np.testing.assert_array_equal(codes[i, : frames[i]].numpy(), ref)
        edge_differs |= not np.array_equal(plain[i, : frames[i]], ref)
    assert edge_differs, "the padded batch no longer changes an edge frame: the re-encoding is untested"


@pytest.mark.parametrize("batch_seconds", [0.0, 30.0])  # one utterance per batch (CPU default), padded batches
def test_extraction_equals_mimi_encode_at_24khz(tmp_path, mimi_dir, mimi_model, batch_seconds):
    out = tmp_path / "mimi.jsonl"
    rc = extract_units.main(["--file-list", str(_file_list(tmp_path)), "--tokenizer", "mimi", "--model-dir", mimi_dir,
                             "--num-codebooks", "3", "--out", str(out), "--device", "cpu", "--audio-backend",
                             "soundfile", "--max-batch-seconds", str(batch_seconds)])
    assert rc == 0
    recs = {r.id: r for r in iter_records(out)}
    assert len(recs) == len(AUDIO)
    meta = read_meta(out)
    inv = UnitInventory(256, 3, "mimi", 12.5)
    assert meta["tokenizer"]["kind"] == "mimi" and meta["deduplicated"] is False
    assert (meta["tokenizer"]["num_codebooks"], meta["tokenizer"]["codebook_size"]) == (3, 256)
    assert len(meta["tokenizer"]["weights_sha256"]) == 64 and meta["unit_seconds"] == 0.08
    for path in AUDIO:
        rec = recs[os.path.splitext(os.path.basename(path))[0]]
        ref = reference_codes(mimi_model, load_audio(path, 24000), 3)
        assert rec.codebooks == 3 and rec.num_frames == len(ref) and rec.durations == [1] * len(ref)
        np.testing.assert_array_equal(inv.unflatten(rec.units), ref)
        # each codebook its own unit range, frames in codebook order
        assert (np.asarray(rec.units).reshape(-1, 3) // 256 == np.arange(3)).all()
        assert abs(rec.audio_seconds - len(load_audio(path, 24000)) / 24000) < 1e-6


def _file_list(tmp_path, paths=AUDIO):
    lst = tmp_path / "files.txt"
    lst.write_text("".join(p + "\n" for p in paths))
    return lst


def test_resume_and_a_different_codebook_count_is_refused(tmp_path, mimi_dir, capsys):
    out = tmp_path / "u.jsonl"
    base = ["--file-list", str(_file_list(tmp_path)), "--tokenizer", "mimi", "--model-dir", mimi_dir,
            "--out", str(out), "--device", "cpu", "--audio-backend", "soundfile"]
    assert extract_units.main(base + ["--num-codebooks", "2"]) == 0
    first = out.read_text()
    capsys.readouterr()
    assert extract_units.main(base + ["--num-codebooks", "2"]) == 0
    assert "0 new" in capsys.readouterr().out and out.read_text() == first
    assert extract_units.main(base + ["--num-codebooks", "3"]) == 2
    assert "different extractor" in capsys.readouterr().err


def test_bad_input_named(tmp_path, mimi_dir, capsys):
    lst = _file_list(tmp_path)
    not_mimi = tmp_path / "hubert"
    not_mimi.mkdir()
    (not_mimi / "config.json").write_text(json.dumps({"model_type": "hubert"}))
    cases = [
        (["--model-dir", str(not_mimi), "--num-codebooks", "2"], "model_type is 'hubert', not 'mimi'"),
        (["--model-dir", str(tmp_path / "absent"), "--num-codebooks", "2"], "not a directory"),
        (["--model-dir", mimi_dir, "--num-codebooks", "0"], "--num-codebooks 0 out of range 1..32"),
        (["--model-dir", mimi_dir, "--num-codebooks", "33"], "--num-codebooks 33 out of range 1..32"),
        (["--model-dir", mimi_dir, "--num-codebooks", "2", "--dedup"], "--dedup is refused for codecs"),
        (["--model-dir", mimi_dir], "needs --num-codebooks"),
    ]
    for extra, message in cases:
        rc = extract_units.main(["--file-list", str(lst), "--tokenizer", "mimi", "--out", str(tmp_path / "x.jsonl"),
                                 "--device", "cpu", *extra])
        err = capsys.readouterr().err
        assert rc == 2 and message in err and "Traceback" not in err, (extra, err)
        assert not (tmp_path / "x.jsonl").exists()


def test_audio_shorter_than_one_frame_is_a_counted_skip(tmp_path, mimi_dir, capsys):
    import soundfile as sf

    short = tmp_path / "short.wav"
    sf.write(short, np.random.default_rng(0).normal(0, 0.1, 1000).astype(np.float32), 16000)  # 0.0625 s < 0.08 s
    out = tmp_path / "u.jsonl"
    rc = extract_units.main(["--file-list", str(_file_list(tmp_path, AUDIO[:1] + [str(short)])), "--tokenizer",
                             "mimi", "--model-dir", mimi_dir, "--num-codebooks", "1", "--out", str(out),
                             "--device", "cpu", "--audio-backend", "soundfile", "--min-seconds", "0"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "skipped 1" in printed and "short.wav" in printed
    assert [r.id for r in iter_records(out)] == [os.path.splitext(os.path.basename(AUDIO[0]))[0]]


def test_codec_records_validated():
    rec = {"id": "a", "path": "a.wav", "units": [1, 260, 7, 300], "durations": [1, 1], "unit_seconds": 0.08,
           "num_frames": 2, "audio_seconds": 0.16, "codebooks": 2}
    assert parse_record(rec, "u.jsonl:1").frames().tolist() == [[1, 260], [7, 300]]
    with pytest.raises(ValueError, match="u.jsonl:1.*durations.*x 2 codebooks"):
        parse_record({**rec, "units": [1, 260, 7]}, "u.jsonl:1")
    with pytest.raises(ValueError, match="codebooks"):
        parse_record({**rec, "codebooks": 0}, "u.jsonl:1")
    with pytest.raises(VocabError, match="not frames in codebook order"):
        UnitInventory(256, 2).unflatten([260, 1])


def test_kmeans_units_unchanged_through_the_interface(tmp_path):
    """The bundled units were made by main before tokenizers existed: the mel + k-means path gives
    the same records byte for byte and a sidecar whose identity matches the old one."""
    out = tmp_path / "mel.jsonl"
    rc = extract_units.main(["--alignments", os.path.join(CORPUS, "alignments.jsonl"), "--tokenizer", "mel",
                             "--kmeans", os.path.join(CORPUS, "km_mel100.npy"), "--out", str(out),
                             "--audio-backend", "soundfile", "--device", "cpu"])
    assert rc == 0
    bundled = os.path.join(CORPUS, "units.jsonl")
    old = {json.loads(line)["id"]: json.loads(line) for line in open(bundled)}
    new = {json.loads(line)["id"]: json.loads(line) for line in open(out)}
    for uid in old:  # paths are written relative to each output
        assert {k: v for k, v in new[uid].items() if k != "path"} == {k: v for k, v in old[uid].items() if k != "path"}
        assert "codebooks" not in new[uid]
    meta = read_meta(out)
    assert compatibility_key(meta) == compatibility_key(read_meta(bundled))
    assert meta["tokenizer"] == {"kind": "mel", "codebook_size": 100, "num_codebooks": 1, "frame_rate": 25.0,
                                 "weights_sha256": None, "kmeans_sha256": meta["kmeans"]["sha256"]}


def test_interleaved_dataset_holds_whole_frames_in_codebook_order(tmp_path, mimi_dir):
    """Extraction -> vocabulary from the sidecar -> interleaved preprocessing: every speech span is
    whole frames, each codebook's ids in its own range."""
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    from megatron_slm.data import preprocess as pp
    from megatron_slm.units.records import read_inventory
    from megatron_slm.vocab import SpeechVocab

    aligns = tmp_path / "alignments.jsonl"
    aligns.write_text("".join(open(os.path.join(CORPUS, "alignments.jsonl")).readlines()[:8]))
    os.symlink(os.path.join(CORPUS, "audio"), tmp_path / "audio")
    units = tmp_path / "mimi2.jsonl"
    assert extract_units.main(["--alignments", str(aligns), "--tokenizer", "mimi", "--model-dir", mimi_dir,
                               "--num-codebooks", "2", "--out", str(units), "--device", "cpu",
                               "--audio-backend", "soundfile"]) == 0
    inv = read_inventory(units)
    SpeechVocab.from_pretrained(TOKENIZER, inventory=inv).save(tmp_path / "tok")
    vocab = SpeechVocab.from_pretrained(tmp_path / "tok")
    meta = pp.run(pp.PreprocessJob(kind="interleaved", tokenizer=str(tmp_path / "tok"), out_prefix=str(tmp_path / "d"),
                                   inputs=[str(units)], alignments=str(aligns), progress=False))
    assert meta["documents"] == 8 and not meta["skipped"]["counts"]
    # dynamic storage keeps the word layout: documents drawn in later epochs hold whole frames too
    from megatron_slm.config import InterleaveConfig
    from megatron_slm.data import interleave as il
    from megatron_slm.document import Markers

    pp.run(pp.PreprocessJob(kind="interleaved", tokenizer=str(tmp_path / "tok"), out_prefix=str(tmp_path / "dyn"),
                            inputs=[str(units)], alignments=str(aligns), progress=False, mode="dynamic"))
    layout, words = IndexedDataset(str(tmp_path / "dyn")), IndexedDataset(str(tmp_path / "dyn_words"))
    mk = Markers(vocab.speech_id, vocab.text_id, vocab.bos, vocab.eod)
    drawn = []
    for i in range(len(layout)):
        w, lay = words[i].astype(np.int64), layout[i].astype(np.int64)
        n = int(w[1])
        offsets = np.concatenate(([0], np.cumsum(w[2:2 + n])))
        u = il.PreparedUtterance(int(w[0]), lay[:offsets[-1]], offsets, lay[offsets[-1]:], w[2 + n:2 + 2 * n],
                                 w[2 + 2 * n:])
        drawn += [il.assemble(u, il.draw(u, InterleaveConfig(), 1234, epoch), mk) for epoch in range(3)]

    ds = IndexedDataset(str(tmp_path / "d"))
    spans = mixed = 0
    for doc in [ds[i].astype(np.int64) for i in range(len(ds))] + drawn:
        is_unit = (doc >= vocab.unit_offset) & (doc < vocab.speech_id)
        mixed += bool(is_unit.any() and (doc < vocab.unit_offset).sum() > 2)
        edges = np.flatnonzero(np.diff(np.r_[0, is_unit.astype(int), 0]))
        for a, b in zip(edges[::2], edges[1::2]):
            span = doc[a:b] - vocab.unit_offset
            assert len(span) % 2 == 0 and (span // 256 == np.arange(len(span)) % 2).all(), span
            assert doc[a - 1] == vocab.speech_id  # a span starts at its marker
            spans += 1
    assert spans >= 8 and mixed >= 1

    # a word-shuffle benchmark from the same units: words move with whole frames
    from megatron_slm.eval.benchmarks.word_shuffle import build_word_shuffle

    items, skipped = build_word_shuffle(str(units), str(aligns))
    assert len(items) + len(skipped) == 8 and items
    for it in items:
        for cand in (it.positive, *it.negatives):
            u = np.asarray(cand.units)
            assert len(u) % 2 == 0 and (u // 256 == np.arange(len(u)) % 2).all()
        assert sorted(it.positive.units) == sorted(it.negatives[0].units)


def test_benchmark_units_on_the_fly_with_mimi(tmp_path, mimi_dir, mimi_model):
    """tools/prepare_eval_data.py --tokenizer mimi: benchmark audio tokenised like the training units."""
    from megatron_slm.commands import prepare_eval_data

    args = prepare_eval_data.parse_args(["swuggy", "--src", str(tmp_path), "--out", str(tmp_path / "e.jsonl"),
                                         "--tokenizer", "mimi", "--model-dir", mimi_dir, "--num-codebooks", "2",
                                         "--device", "cpu", "--audio-backend", "soundfile"])
    source = prepare_eval_data.units_source(args)
    got = source.units(AUDIO[:2])
    assert source.identity["tokenizer"]["num_codebooks"] == 2 and "mimi k=256 x 2 codebooks" in source.describe
    inv = UnitInventory(256, 2)
    for path in AUDIO[:2]:
        np.testing.assert_array_equal(got[path], inv.flatten(reference_codes(mimi_model, load_audio(path, 24000), 2)))
