"""The unit inventory in the vocabulary: K x n_q codec units after the text ids (each codebook its
own id range), from a units sidecar through hf-to-mcore --units-meta and back to HF; the
one-codebook (HuBERT/SIMS) layout and tokenizer directory unchanged."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from megatron_slm.units.records import make_codec_meta, write_meta
from megatron_slm.vocab import INVENTORY_FILE, SpeechVocab, UnitInventory, VocabError

from conftest import CORPUS, REPO, TOKENIZER

sys.path.insert(0, str(REPO / "tools"))
BUNDLED_UNITS = CORPUS / "units.jsonl"
V, K, NQ = 512, 256, 3


def codec_sidecar(tmp_path, n_q=NQ) -> Path:
    units = tmp_path / f"mimi{n_q}.jsonl"
    write_meta(units, make_codec_meta({"kind": "mimi", "codebook_size": K, "num_codebooks": n_q, "frame_rate": 12.5,
                                       "sample_rate": 24000, "weights_sha256": "0" * 64, "model": None}))
    return Path(str(units) + ".meta.json")


def test_codec_inventory_ids():
    inv = UnitInventory(K, NQ, "mimi", 12.5)
    vocab = SpeechVocab.from_pretrained(TOKENIZER, inventory=inv)
    assert (vocab.num_units, vocab.speech_id, vocab.text_id, vocab.vocab_size) == (K * NQ, V + 768, V + 769, V + 770)
    codes = np.array([[0, 0, 0], [255, 1, 7]])
    np.testing.assert_array_equal(vocab.unit_ids(codes), [[V, V + 256, V + 512], [V + 255, V + 257, V + 519]])
    assert [inv.codebook_range(q) for q in range(NQ)] == [(0, 256), (256, 512), (512, 768)]
    assert vocab.identity()["num_codebooks"] == NQ and vocab.unique_identifiers["num_codebooks"] == NQ
    with pytest.raises(VocabError, match="code 256 outside"):
        vocab.unit_ids(np.array([[256, 0, 0]]))
    with pytest.raises(VocabError, match=r"expected \[frames, 3\] codes"):
        vocab.unit_ids(np.zeros((2, 2), dtype=np.int64))


def test_one_codebook_layout_and_identity_unchanged(tmp_path):
    vocab = SpeechVocab.from_pretrained(TOKENIZER, num_units=500)
    assert (vocab.unit_offset, vocab.speech_id, vocab.text_id) == (V, V + 500, V + 501)
    assert set(vocab.identity()) == {"text_vocab_sha256", "text_vocab_size", "num_units", "vocab_size"}
    assert "num_codebooks" not in vocab.unique_identifiers
    vocab.save(tmp_path / "tok")
    assert not (tmp_path / "tok" / INVENTORY_FILE).exists()  # a SlamKit-compatible tokenizer dir


def test_saved_inventory_is_checked(tmp_path):
    SpeechVocab.from_pretrained(TOKENIZER, inventory=UnitInventory(K, NQ, "mimi")).save(tmp_path / "tok")
    again = SpeechVocab.from_pretrained(tmp_path / "tok")
    assert again.inventory == UnitInventory(K, NQ, "mimi") and again.num_units == K * NQ
    with pytest.raises(VocabError, match="holds 3 codebook.*units have 2"):
        SpeechVocab.from_pretrained(tmp_path / "tok", inventory=UnitInventory(384, 2, "mimi"))
    with pytest.raises(VocabError, match="num_units=500"):
        SpeechVocab.from_pretrained(tmp_path / "tok", num_units=500)


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    from megatron_slm.testing.random_hf import make_random_hf_model

    d = tmp_path_factory.mktemp("hf") / "base"
    make_random_hf_model(d, "llama", TOKENIZER, hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, vocab_size=V, tie_word_embeddings=False)
    return d


def test_hf_to_mcore_from_a_codec_sidecar_and_back(base_model, tmp_path, capsys):
    from convert_checkpoint import main

    meta = codec_sidecar(tmp_path)
    assert main(["hf-to-mcore", "--hf-dir", str(base_model), "--out", str(tmp_path / "mc"), "--tp", "2",
                 "--units-meta", str(meta)]) == 0
    vocab = SpeechVocab.from_pretrained(tmp_path / "mc" / "tokenizer")
    assert vocab.inventory == UnitInventory(K, NQ, "mimi", 12.5)
    tok = vocab.tokenizer
    assert tok.convert_tokens_to_ids(["<Un0>", "<Un256>", "<Un767>", "<speech>", "<text>"]) == \
        [V, V + 256, V + 767, V + 768, V + 769]
    assert json.loads((tmp_path / "mc" / "slm_model.json").read_text())["identity"]["vocab"]["num_codebooks"] == NQ
    assert main(["mcore-to-hf", "--mcore-dir", str(tmp_path / "mc"), "--out", str(tmp_path / "hf")]) == 0
    assert SpeechVocab.from_pretrained(tmp_path / "hf").inventory.num_codebooks == NQ
    assert json.loads((tmp_path / "hf" / "slm_identity.json").read_text())["vocab"]["num_codebooks"] == NQ
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["vocab_size"] == V + K * NQ + 2
    capsys.readouterr()
    # a units file of another codebook count than the converted tokenizer holds
    assert main(["hf-to-mcore", "--hf-dir", str(tmp_path / "hf"), "--out", str(tmp_path / "again"),
                 "--units-meta", str(codec_sidecar(tmp_path, 2))]) == 2
    err = capsys.readouterr().err
    assert "holds 3 codebook(s) of 256 units" in err and "units have 2 of 256" in err and "Traceback" not in err


def test_hf_to_mcore_from_a_kmeans_sidecar_keeps_the_sims_layout(base_model, tmp_path, capsys):
    from convert_checkpoint import main

    assert main(["hf-to-mcore", "--hf-dir", str(base_model), "--out", str(tmp_path / "mc"),
                 "--units-meta", str(BUNDLED_UNITS) + ".meta.json"]) == 0
    vocab = SpeechVocab.from_pretrained(tmp_path / "mc" / "tokenizer")
    assert (vocab.num_units, vocab.speech_id, vocab.text_id) == (100, V + 100, V + 101)
    assert not (tmp_path / "mc" / "tokenizer" / INVENTORY_FILE).exists()
    capsys.readouterr()
    assert main(["hf-to-mcore", "--hf-dir", str(base_model), "--out", str(tmp_path / "x"),
                 "--units-meta", str(tmp_path / "absent.jsonl.meta.json")]) == 2
    assert "identity sidecar missing" in capsys.readouterr().err
    assert main(["hf-to-mcore", "--hf-dir", str(base_model), "--out", str(tmp_path / "x"), "--num-units", "500",
                 "--units-meta", str(codec_sidecar(tmp_path))]) == 2
    assert "num_units=500 but the unit inventory has 768 units" in capsys.readouterr().err
