"""Unit identity: one typed record over every stored form, one comparison, one message naming both sides."""
from __future__ import annotations

import json

import pytest

from megatron_slm.unit_identity import (IdentityError, UnitIdentity, check_ids, check_unit_count, check_units,
                                        read_units_sidecar)

from conftest import CORPUS

KMEANS = {"extractor": {"name": "hubert", "layer": 11, "frame_rate": 25.0}, "k": 500, "sha256": "a" * 64,
          "deduplicated": True, "compat": "slamkit"}
CODEC = {"tokenizer": {"kind": "mimi", "codebook_size": 2048, "num_codebooks": 8, "frame_rate": 12.5,
                       "weights_sha256": "b" * 64, "model": "/models/mimi"}, "deduplicated": False, "compat": "none"}


def test_the_record_reads_every_stored_form_unchanged():
    km = UnitIdentity.from_key(KMEANS)
    assert (km.kind, km.num_units, km.codebook_sha256, km.weights_sha256, km.deduplicated, km.compat) == \
        ("hubert", 500, "a" * 64, None, True, "slamkit")
    assert km.key == KMEANS  # written back as it was read
    old = UnitIdentity.from_key({k: v for k, v in KMEANS.items() if k != "compat"})
    assert old.compat == "none"  # keys written before the convention field were made with none
    codec = UnitIdentity.from_key(CODEC)
    assert (codec.kind, codec.num_units, codec.weights_sha256, codec.settings["frame_rate"]) == ("mimi", 16384, "b" * 64, 12.5)
    sidecar = read_units_sidecar(str(CORPUS / "units.jsonl.meta.json"))
    assert sidecar["k"] == 100 and "path" not in json.dumps(sidecar)  # informational paths are not part of it


def test_one_comparison_one_message():
    check_units(KMEANS, dict(KMEANS, sidecar="/elsewhere/u.meta.json"), "a.jsonl", "the model")  # where: informational
    check_units(KMEANS, None, "a.jsonl", "the model")  # nothing recorded: nothing to refuse
    with pytest.raises(IdentityError) as e:
        check_units(dict(KMEANS, sha256="c" * 64), KMEANS, "items.jsonl", "the model")
    assert str(e.value) == (f"items.jsonl and the model hold units from a different extractor/k-means "
                            f"(sha256 {'c' * 64!r} in items.jsonl vs {'a' * 64!r} in the model)")
    with pytest.raises(IdentityError, match="kind 'mimi' in x vs 'hubert' in y; units 16384 in x vs 500 in y"):
        check_units(CODEC, KMEANS, "x", "y")  # a codec is never taken for k-means units, though they share few fields
    with pytest.raises(IdentityError, match="compat 'none' in x vs 'slamkit' in y"):
        check_units({k: v for k, v in KMEANS.items() if k != "compat"}, KMEANS, "x", "y")
    check_units({k: v for k, v in KMEANS.items() if k != "compat"}, KMEANS, "x", "y", compare_compat=False)
    with pytest.raises(ValueError, match=r"^p.jsonl: units come from a k=500 extractor but the model vocabulary has 100 units$"):
        check_unit_count(KMEANS, 100, "p.jsonl", "the model vocabulary", error=ValueError)
    check_unit_count(CODEC, 16384, "p.jsonl", "the model vocabulary")


def test_vocabulary_and_units_together():
    vocab = {"text_vocab_sha256": "t", "text_vocab_size": 10, "num_units": 500, "vocab_size": 512}
    check_ids({"vocab": vocab, "units": KMEANS}, {"vocab": vocab, "units": KMEANS}, "d.meta.json", "the tokenizer")
    with pytest.raises(IdentityError, match=r"d.meta.json and the tokenizer were made with a different vocabulary "
                                            r"\(num_units 100 in d.meta.json vs 500 in the tokenizer\)"):
        check_ids({"vocab": dict(vocab, num_units=100)}, {"vocab": vocab}, "d.meta.json", "the tokenizer")
    check_ids({"vocab": dict(vocab, num_units=100)}, {"vocab": vocab}, "text", "the tokenizer", compare_units=False)
    with pytest.raises(IdentityError, match="d.meta.json and the tokenizer hold units from a different extractor"):
        check_ids({"vocab": vocab, "units": dict(KMEANS, k=400)}, {"vocab": vocab, "units": KMEANS}, "d.meta.json",
                  "the tokenizer")
