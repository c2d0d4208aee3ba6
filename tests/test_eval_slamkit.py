"""eval_slm --compat: SlamKit's restricted softmax (restrict=speech keeps BOS and EOS) against a
reference computed from the model's logits, the project's own convention, and the refusal to
mix benchmarks of different conventions."""
from __future__ import annotations

import json

import pytest
import torch

from megatron_slm.commands import eval_slm
from megatron_slm.eval.items import write_items
from megatron_slm.eval.benchmarks.word_shuffle import build_word_shuffle
from megatron_slm.units.records import compatibility_key, read_meta
from megatron_slm.vocab import SpeechVocab

from conftest import CORPUS, TOKENIZER


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from transformers import LlamaConfig, LlamaForCausalLM

    d = tmp_path_factory.mktemp("hf")
    vocab = SpeechVocab.from_pretrained(str(TOKENIZER), num_units=100)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab.vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      bos_token_id=vocab.bos, eos_token_id=vocab.eod)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():  # make BOS/EOS likely after units: the convention then matters
        model.lm_head.weight[[vocab.bos, vocab.eod]] *= 8
    model.save_pretrained(d)
    vocab.save(d)
    return d


@pytest.fixture(scope="module")
def items():
    items, _ = build_word_shuffle(f"{CORPUS}/units.jsonl", f"{CORPUS}/alignments.jsonl", seed=0)
    return items[:8]


def _items_file(path, items, compat):
    identity = compatibility_key(read_meta(f"{CORPUS}/units.jsonl"))
    if compat is None:  # a benchmark prepared before the convention was recorded
        identity.pop("compat")
    else:
        identity["compat"] = compat
    write_items(path, "word_shuffle", items, identity)
    return str(path)


def _reference(model_dir, items, allowed_ids):
    """Mean log p of each candidate's units after BOS, under a softmax over `allowed_ids` only."""
    from transformers import AutoModelForCausalLM

    vocab = SpeechVocab.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    keep = torch.zeros(vocab.vocab_size, dtype=torch.bool)
    keep[allowed_ids(vocab)] = True
    out = {}
    for it in items:
        scores = []
        for cand in it.candidates():
            toks = torch.tensor([[vocab.bos] + [vocab.unit_offset + u for u in cand.units]])
            with torch.no_grad():
                logits = model(toks).logits[0, :-1].double()
            lp = torch.log_softmax(logits.masked_fill(~keep, float("-inf")), -1)
            scores.append(lp.gather(1, toks[0, 1:, None]).mean().item())
        out[it.id] = scores
    return out


def _scores(path):
    return {r["id"]: [r["positive"], *r["negatives"]] for r in map(json.loads, open(path))}


def _run(model_dir, files, out, *extra):
    argv = ["--hf-dir", str(model_dir), "--items", *files, "--bootstrap", "10", "--device", "cpu"]
    return eval_slm.main(argv + (["--item-scores", str(out)] if out else []) + list(extra))


def test_restrict_speech_slamkit_keeps_bos_and_eos(model_dir, items, tmp_path):
    path = _items_file(tmp_path / "ws.jsonl", items, "slamkit")
    assert _run(model_dir, [path], tmp_path / "sk.jsonl", "--restrict", "speech", "--compat", "slamkit",
                "--out", str(tmp_path / "r.json")) == 0
    assert json.loads((tmp_path / "r.json").read_text())["settings"]["compat"] == "slamkit"
    sk = _reference(model_dir, items, lambda v: list(range(v.unit_offset, v.speech_id)) + [v.bos, v.eod])
    units_only = _reference(model_dir, items, lambda v: list(range(v.unit_offset, v.speech_id)))
    got = _scores(tmp_path / "sk.jsonl")
    gap = 0.0
    for it in items:
        for a, b, c in zip(got[it.id], sk[it.id], units_only[it.id]):
            assert a == pytest.approx(b, abs=1e-5)
            gap = max(gap, abs(b - c))
    assert gap > 1e-3  # the two conventions really differ on this model
    # compat none: a softmax over the units only
    assert _run(model_dir, [path], tmp_path / "none.jsonl", "--restrict", "speech", "--compat", "none",
                "--allow-mixed-compat") == 0
    for it in items:
        assert _scores(tmp_path / "none.jsonl")[it.id] == pytest.approx(units_only[it.id], abs=1e-5)


def test_unrestricted_scores_do_not_depend_on_the_convention(model_dir, items, tmp_path):
    path = _items_file(tmp_path / "ws.jsonl", items, "slamkit")
    assert _run(model_dir, [path], tmp_path / "a.jsonl") == 0
    full = _reference(model_dir, items, lambda v: list(range(v.vocab_size)))
    for it in items:
        assert _scores(tmp_path / "a.jsonl")[it.id] == pytest.approx(full[it.id], abs=1e-5)


def test_conventions_never_mix_silently(model_dir, items, tmp_path, capsys):
    old = _items_file(tmp_path / "old.jsonl", items, None)      # no field: made with none
    new = _items_file(tmp_path / "new.jsonl", items, "slamkit")
    assert _run(model_dir, [old], None, "--restrict", "speech", "--out", str(tmp_path / "r.json")) == 0
    assert json.loads((tmp_path / "r.json").read_text())["settings"]["compat"] == "none"  # the benchmark's
    assert _run(model_dir, [old], None, "--compat", "slamkit") == 1
    err = capsys.readouterr().err
    assert "follows compat=none" in err and "--allow-mixed-compat" in err and "Traceback" not in err
    assert _run(model_dir, [old, new], None) == 1
    assert "old.jsonl follows compat=none" in capsys.readouterr().err
    assert _run(model_dir, [old, new], None, "--allow-mixed-compat", "--compat", "slamkit") == 0
