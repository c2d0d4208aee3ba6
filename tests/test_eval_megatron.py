"""The same checkpoint scored by the HF backend (exported model) and by Megatron at TP=2 x PP=2
(one torchrun job) gives the same log-likelihood per item; the eval CLI's bad-input errors."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from megatron_slm.eval.items import Candidate, Item, read_items, write_items

from conftest import CORPUS, REPO, TOKENIZER, run_torchrun

sys.path.insert(0, str(REPO / "tools"))
from eval_slm import main as eval_main  # noqa: E402
from prepare_eval_data import main as prepare_main  # noqa: E402

K = 100


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    from megatron_slm.convert.hf_to_mcore import convert_hf_to_mcore
    from megatron_slm.convert.mcore_to_hf import convert_mcore_to_hf
    from megatron_slm.testing.random_hf import make_random_hf_model

    root = tmp_path_factory.mktemp("evalmc")
    make_random_hf_model(root / "base_hf", "llama", TOKENIZER, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, vocab_size=512,
                         tie_word_embeddings=True, max_position_embeddings=1024, std=0.1)
    # random (not mean) unit rows, so unit sequences get distinct likelihoods
    convert_hf_to_mcore(root / "base_hf", root / "mc", tp=2, pp=2, num_units=K, init="normal", progress=False)
    convert_mcore_to_hf(root / "mc", root / "hf", progress=False)
    data = root / "eval"
    assert prepare_main(["word-shuffle", "--units-file", str(CORPUS / "units.jsonl"), "--alignments",
                         str(CORPUS / "alignments.jsonl"), "--out", str(data / "word_shuffle.jsonl")]) == 0
    ws = read_items(data / "word_shuffle.jsonl")
    write_items(data / "word_shuffle.jsonl", "word_shuffle", ws.items[:10], ws.unit_identity)
    u = ws.items[0].positive.units
    cm = [Item("s2t-0", "cm", Candidate(text="the ball was red."), [Candidate(text="the red was ball.")],
               prompt=Candidate(units=u[:30])),
          Item("t2s-0", "cm", Candidate(units=u[30:60]), [Candidate(units=u[60:95]), Candidate(units=u[5:20])],
               prompt=Candidate(text="Once upon a time,")),
          Item("txt-0", "cm", Candidate(text="Lily had a big red ball."), [Candidate(text="Lily had a ball big red.")])]
    write_items(data / "cm.jsonl", "cm", cm, ws.unit_identity)
    return root


def _scores(path: Path) -> dict[str, list[float]]:
    return {r["id"]: [r["positive"], *r["negatives"]] for r in map(json.loads, path.read_text().splitlines())}


@pytest.mark.slow  # > 10 s: the full suite runs it, the inner loop does not
def test_hf_and_megatron_tp2_pp2_agree_per_item(work):
    common = ["--tasks", "word_shuffle,cm", "--data", str(work / "eval"), "--batch-size", "3", "--bootstrap", "50"]
    assert eval_main(["--hf-dir", str(work / "hf"), *common, "--item-scores", str(work / "hf.jsonl"),
                      "--out", str(work / "hf_report.json")]) == 0
    proc = run_torchrun(4, REPO / "tools" / "eval_slm.py",
                        ["--mcore-dir", work / "mc", "--tp", "2", "--pp", "2", *common,
                         "--item-scores", work / "mc.jsonl", "--out", work / "mc_report.json"], cwd=REPO, timeout=600)
    assert "word_shuffle" in proc.stdout
    hf, mc = _scores(work / "hf.jsonl"), _scores(work / "mc.jsonl")
    assert set(hf) == set(mc) and len(hf) == 13
    for key in hf:
        assert len(hf[key]) == len(mc[key])
        for a, b in zip(hf[key], mc[key]):
            assert abs(a - b) < 1e-4, (key, a, b)
    # candidates really differ (no trivial all-equal scores)
    assert len({round(v, 4) for vals in hf.values() for v in vals}) > 20
    rh = json.loads((work / "hf_report.json").read_text())["tasks"]
    rm = json.loads((work / "mc_report.json").read_text())["tasks"]
    assert rh["word_shuffle"]["accuracy"] == rm["word_shuffle"]["accuracy"]
    assert rh["cm"]["n"] == 3


def test_eval_cli_rejects_units_of_another_extractor(work, tmp_path, capsys):
    ws = read_items(work / "eval" / "word_shuffle.jsonl")
    other = dict(ws.unit_identity, sha256="0" * 64)
    meta = tmp_path / "units.meta.json"  # the model's training units came from other centroids
    meta.write_text(json.dumps({"format": "megatron-slm-units/1", "extractor": ws.unit_identity["extractor"],
                                "kmeans": {"k": K, "sha256": "0" * 64, "path": None}, "deduplicated": True}))
    args = ["--hf-dir", str(work / "hf"), "--items", str(work / "eval" / "word_shuffle.jsonl")]
    assert eval_main(args + ["--units-meta", str(meta)]) == 1
    err = capsys.readouterr().err
    assert "different extractor" in err and "sha256" in err and "Traceback" not in err
    write_items(tmp_path / "k50.jsonl", "x", ws.items[:2], dict(other, k=50))
    assert eval_main(["--hf-dir", str(work / "hf"), "--items", str(tmp_path / "k50.jsonl")]) == 1
    assert "k=50 extractor but the model vocabulary has 100 units" in capsys.readouterr().err
    assert eval_main(["--hf-dir", str(tmp_path / "missing"), "--items", str(tmp_path / "k50.jsonl")]) == 1
    assert "model directory not found" in capsys.readouterr().err
