"""Training datasets built through BlendedMegatronDatasetBuilder: static == dynamic at a fixed
epoch, fresh draws per epoch, blend proportions, labels/loss masks/attention at document
boundaries, and refusal of mismatched data."""

import numpy as np
import pytest

from megatron_slm.config import load_config
from megatron_slm.data import preprocess as pp
from megatron_slm.data.blend import build_datasets
from megatron_slm.data.datasets import DatasetError, SLMDataset
from megatron_slm.testing.synthetic_units import write_synthetic_corpus
from megatron_slm.vocab import MODALITY_SPEECH, MODALITY_TEXT, SpeechVocab

from conftest import TOKENIZER

SEED = 77


@pytest.fixture(scope="module", autouse=True)
def process_group(gloo_group):
    yield


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    corpus = write_synthetic_corpus(str(root), n=120, k=20, seed=11)
    base = dict(tokenizer=str(TOKENIZER), inputs=[corpus.units], alignments=corpus.alignments, seed=SEED, progress=False, shard_lines=64)
    pp.run(pp.PreprocessJob(kind="interleaved", out_prefix=str(root / "static"), **base))
    pp.run(pp.PreprocessJob(kind="interleaved", out_prefix=str(root / "dynamic"), mode="dynamic", **base))
    pp.run(pp.PreprocessJob(kind="speech", out_prefix=str(root / "speech"), **{**base, "alignments": None}))
    text = root / "text.jsonl"
    text.write_text("".join(f'{{"text": "Story {i}: the little dog ran to the park and found a red ball."}}\n' for i in range(80)))
    pp.run(pp.PreprocessJob(kind="text", out_prefix=str(root / "text"), tokenizer=str(TOKENIZER), inputs=[str(text)], progress=False))
    return root


@pytest.fixture(scope="module")
def vocab():
    return SpeechVocab.from_pretrained(str(TOKENIZER), num_units=20)


def _cfg(root, blend, *overrides):
    items = ",".join(f"{{path: {root / p}, weight: {w}, kind: {k}}}" for p, w, k in blend)
    return load_config(None, ["data.source=blend", "train.seq_length=48", f"train.seed={SEED}", "data.split=90,5,5",
                              f"data.cache_dir={root / 'cache'}", f"data.blend=[{items}]", *overrides])


def _items(ds, n=None):
    return [ds[i] for i in range(len(ds) if n is None else n)]


def test_static_and_dynamic_give_identical_samples_at_epoch_0(data, vocab):
    # 40 samples x 48 tokens fit in one epoch of either dataset
    static = build_datasets(_cfg(data, [("static", 1, "interleaved")]), vocab, 40, 4, 4)
    dynamic = build_datasets(_cfg(data, [("dynamic", 1, "interleaved")], "data.mode=dynamic"), vocab, 40, 4, 4)
    a, b = _items(static.train), _items(dynamic.train)
    assert len(a) == len(b) == 40
    for x, y in zip(a, b):
        for key in ("tokens", "labels", "loss_mask", "modality"):
            assert np.array_equal(x[key], y[key]), key
    assert any((x["modality"] == MODALITY_SPEECH).any() and (x["modality"] == MODALITY_TEXT).any() for x in a)


def test_dynamic_draws_change_with_the_epoch_and_are_reproducible(data, vocab):
    cfg = _cfg(data, [("dynamic", 1, "interleaved")], "data.mode=dynamic")
    splits = build_datasets(cfg, vocab, 400, 4, 4)  # several epochs of ~110 documents
    ds: SLMDataset = splits.train.datasets[0]
    epochs = np.asarray(ds.document_index) // len(ds.dataset)
    assert epochs.max() >= 2
    docs = ds.indices[:20]
    changed = sum(not np.array_equal(ds.document(int(d), 0), ds.document(int(d), 1)) for d in docs)
    assert changed >= 15
    # static mode over dynamic storage: every epoch sees the epoch-0 draw
    frozen = build_datasets(_cfg(data, [("dynamic", 1, "interleaved")]), vocab, 400, 4, 4).train.datasets[0]
    assert all(np.array_equal(frozen.document(int(d), 3), ds.document(int(d), 0)) for d in docs)
    # rebuilt from the cache, read in another order: same samples (no hidden state)
    again = build_datasets(cfg, vocab, 400, 4, 4).train
    for i in (399, 0, 250, 17):
        assert np.array_equal(again[i]["tokens"], splits.train[i]["tokens"])
    # every packed sample is exactly the drawn documents in document-index order
    seq = np.concatenate([ds.document(int(v) % len(ds.dataset), int(v) // len(ds.dataset)) for v in ds.document_index])
    beg, off = ds.sample_index[5]
    start = sum(len(ds.document(int(v) % len(ds.dataset), int(v) // len(ds.dataset))) for v in ds.document_index[:beg]) + off
    assert np.array_equal(ds[int(np.flatnonzero(np.asarray(ds.shuffle_index) == 5)[0])]["tokens"], seq[start:start + 48])


def test_dynamic_index_is_the_same_when_drawn_by_worker_processes(data, vocab, monkeypatch):
    from megatron_slm.data import dynamic_index as D

    cfg = _cfg(data, [("dynamic", 1, "interleaved")], "data.mode=dynamic")
    single = build_datasets(cfg, vocab, 150, 0, 0).train
    monkeypatch.setattr(D, "DRAW_CHUNK", 30)  # 108 train documents -> forked drawing processes
    cfg.data.cache_dir = str(data / "cache_parallel")
    forked = build_datasets(cfg, vocab, 150, 0, 0).train
    assert np.array_equal(np.asarray(single.datasets[0].sample_index), np.asarray(forked.datasets[0].sample_index))
    for i in range(0, 150, 7):
        assert np.array_equal(single[i]["tokens"], forked[i]["tokens"])


def test_blend_proportions_and_per_dataset_validation(data, vocab):
    cfg = _cfg(data, [("text", 0.2024, "text"), ("static", 0.5433, "interleaved"), ("speech", 0.2543, "speech")])
    splits = build_datasets(cfg, vocab, 2000, 60, 20)
    ids = np.array([splits.train[i]["dataset_id"] for i in range(len(splits.train))])
    share = np.bincount(ids, minlength=3) / len(ids)
    assert np.allclose(share, [0.2024, 0.5433, 0.2543], atol=0.02)
    assert set(splits.valid_per_dataset) == {"text", "static", "speech"}
    assert all(len(ds) >= 60 for ds in splits.valid_per_dataset.values())  # each at the full validation size
    assert len(splits.test) >= 20
    speech = splits.valid_per_dataset["speech"][0]
    assert (speech["modality"] != MODALITY_TEXT).all()


def test_labels_loss_masks_and_document_attention(data, vocab):
    blend = [("text", 1, "text"), ("speech", 1, "speech")]
    for loss_on in ("all", "speech", "text"):
        cfg = _cfg(data, blend, f"data.loss_on={loss_on}", "data.attention_across_documents=false")
        for item in _items(build_datasets(cfg, vocab, 30, 2, 2).train, 30):
            tokens, labels, mask, mod = item["tokens"], item["labels"], item["loss_mask"], item["modality"]
            assert tokens.shape == labels.shape == mask.shape == mod.shape == (48,)
            assert np.array_equal(tokens[1:], labels[:-1])
            assert np.array_equal(mod, vocab.modality_of(labels))
            want = {"all": np.ones(48, bool), "speech": mod == MODALITY_SPEECH, "text": mod == MODALITY_TEXT}[loss_on]
            assert np.array_equal(mask.astype(bool), want)
            # attention: causal within a document, nothing across an EOD
            att = item["attention_mask"][0]
            assert att.shape == (48, 48) and att.dtype == bool
            for i in np.flatnonzero(tokens == vocab.eod):
                if i + 1 < 48:
                    assert att[i + 1, : i + 1].all() and not att[i + 1, i + 1]
                    assert item["position_ids"][i + 1] == 0
            assert not att[np.tril_indices(48)][np.tril_indices(48)[0] == np.tril_indices(48)[1]].any()
    across = build_datasets(_cfg(data, blend), vocab, 5, 1, 1).train[0]
    assert "attention_mask" not in across and np.array_equal(across["position_ids"], np.arange(48))


def test_mismatched_data_is_refused(data, vocab, tmp_path):
    other = SpeechVocab.from_pretrained(str(TOKENIZER), num_units=30)
    with pytest.raises(DatasetError, match=r"static.meta.json and the tokenizer .* were made with a different vocabulary "
                                           r"\(num_units 20 in .*static.meta.json vs 30 in the tokenizer"):
        build_datasets(_cfg(data, [("static", 1, "interleaved")]), other, 10, 1, 1)
    with pytest.raises(DatasetError, match="holds 'speech' documents but the blend says kind='text'"):
        build_datasets(_cfg(data, [("speech", 1, "text")]), vocab, 10, 1, 1)
    with pytest.raises(DatasetError, match="data.mode=dynamic but .*static was preprocessed in static mode"):
        build_datasets(_cfg(data, [("static", 1, "interleaved")], "data.mode=dynamic"), vocab, 10, 1, 1)
    with pytest.raises(DatasetError, match=r"nope.bin does not exist"):
        build_datasets(_cfg(data, [("nope", 1, "text")]), vocab, 10, 1, 1)
    # text datasets only need the same text vocabulary: a different K is fine
    build_datasets(_cfg(data, [("text", 1, "text")]), other, 10, 1, 1)
