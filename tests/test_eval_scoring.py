"""Scoring and report: likelihood per candidate, batching, ties, modality restriction, and the
acceptance check that a model trained on a corpus prefers its real utterances over word-shuffled
ones while a random model is at chance; item files refused naming file:line and field, benchmark
units of another k-means refused, candidates beyond the context warned about."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from megatron_slm.eval.likelihood import HFBackend
from megatron_slm.eval.items import Candidate, Item, ItemError, read_items, write_items
from megatron_slm.eval.benchmarks.word_shuffle import build_word_shuffle
from megatron_slm.eval.run import check_sets
from megatron_slm.eval.report import bootstrap_ci, summarize, table
from megatron_slm.eval.scoring import ItemScore, encode_candidate, make_batches, score_items
from megatron_slm.models import record
from megatron_slm.vocab import SpeechVocab

from conftest import CORPUS, TOKENIZER


@pytest.fixture(scope="module")
def vocab():
    return SpeechVocab.from_pretrained(TOKENIZER, num_units=100)


def tiny_llama(vocab, seed=0, hidden=64, layers=2):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab.vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=1024, bos_token_id=vocab.bos, eos_token_id=vocab.eod,
                      tie_word_embeddings=True)
    return LlamaForCausalLM(cfg)


@pytest.fixture(scope="module")
def shuffle_items():
    items, skipped = build_word_shuffle(f"{CORPUS}/units.jsonl", f"{CORPUS}/alignments.jsonl", seed=0)
    assert not skipped and len(items) >= 40
    return items


def test_encoding_follows_the_recipe(vocab):
    speech = encode_candidate(Candidate(units=[3, 4]), None, vocab)
    assert speech.tokens.tolist() == [vocab.bos, vocab.unit_offset + 3, vocab.unit_offset + 4]
    assert speech.score_from == 1  # every unit scored, no modality token
    cm = encode_candidate(Candidate(text="the end"), Candidate(units=[5]), vocab)
    toks = cm.tokens.tolist()
    assert toks[:4] == [vocab.bos, vocab.speech_id, vocab.unit_offset + 5, vocab.text_id]
    assert toks[cm.score_from:] == vocab.encode_text(" the end")  # only the continuation is scored


def test_batching_does_not_change_scores(vocab, shuffle_items):
    model = tiny_llama(vocab)
    items = shuffle_items[:12]
    one = score_items(items, vocab, HFBackend(model, vocab, max_batch=1))
    many = score_items(items, vocab, HFBackend(model, vocab, max_batch=8, max_tokens=600))
    for a, b in zip(one, many):
        assert a.positive == pytest.approx(b.positive, abs=1e-5)
        assert a.negatives[0] == pytest.approx(b.negatives[0], abs=1e-5)
    sums = score_items(items, vocab, HFBackend(model, vocab), reduce="sum")
    n_pos = len(items[0].positive.units)
    assert sums[0].positive == pytest.approx(one[0].positive * n_pos, rel=1e-5)


def test_restricting_to_speech_raises_unit_likelihoods(vocab, shuffle_items):
    model = tiny_llama(vocab)
    full = score_items(shuffle_items[:4], vocab, HFBackend(model, vocab))
    speech = score_items(shuffle_items[:4], vocab, HFBackend(model, vocab, restrict="speech"))
    assert all(s.positive > f.positive for s, f in zip(speech, full))
    text_item = Item(id="t", task="x", positive=Candidate(text="a cat"), negatives=[Candidate(text="cat a")])
    with pytest.raises(ItemError, match="restrict='speech'"):
        score_items([text_item], vocab, HFBackend(model, vocab, restrict="speech"))


def test_ties_count_half_and_report(tmp_path):
    scores = [ItemScore("a", "t", "p1", -1.0, [-2.0]), ItemScore("b", "t", "p1", -1.0, [-1.0]),
              ItemScore("c", "t", "p2", -3.0, [-2.0]), ItemScore("d", "t", "p2", -1.0, [-1.0, -1.0, -5.0])]
    assert [s.outcome for s in scores] == [1.0, 0.5, 0.0, pytest.approx(1 / 3)]
    summary = summarize(scores, n_boot=200)
    assert summary["t"]["accuracy"] == pytest.approx((1 + 0.5 + 0 + 1 / 3) / 4)
    assert summary["t"]["parts"]["p1"]["accuracy"] == 0.75 and summary["t"]["parts"]["p2"]["n"] == 2
    lo, hi = summary["t"]["ci95"]
    assert 0 <= lo <= summary["t"]["accuracy"] <= hi <= 1
    assert "p2" in table(summary)
    lo, hi = bootstrap_ci(np.r_[np.ones(80), np.zeros(20)], n_boot=500)
    assert lo < 0.8 < hi and hi - lo < 0.2


def test_make_batches_respects_budget():
    lengths = [5, 50, 7, 49, 6, 100]
    batches = make_batches(lengths, max_tokens=100, max_batch=3)
    assert sorted(i for b in batches for i in b) == list(range(6))
    for b in batches:
        assert len(b) <= 3 and (len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 100)


def test_item_file_round_trip_and_identity(tmp_path, shuffle_items, vocab):
    ident = {"extractor": {"name": "mel", "frame_rate": 25.0}, "k": 100, "sha256": "abc", "deduplicated": True}
    path = tmp_path / "ws.jsonl"
    write_items(path, "word_shuffle", shuffle_items[:3], ident)
    back = read_items(path)
    assert back.unit_identity == ident and [i.id for i in back.items] == [i.id for i in shuffle_items[:3]]
    assert back.items[0].positive.units == shuffle_items[0].positive.units
    check_sets([("ws", back)], ident, vocab)
    with pytest.raises(ItemError, match="k=100 extractor but the model vocabulary has 500"):
        check_sets([("ws", back)], None, SimpleNamespace(num_units=500))
    with pytest.raises(ItemError, match="sha256 'abc' in .*ws.jsonl vs 'other' in the model"):
        check_sets([("ws", back)], dict(ident, sha256="other"), vocab)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(path.read_text().replace('"negatives": [', '"negatives": [], "x": [', 1))
    with pytest.raises(ItemError, match=r"bad.jsonl:2: field .negatives."):
        read_items(bad)


def _train(model, vocab, items, steps=50, lr=5e-3):
    """Plain-torch next-token training on the positives (BOS + units)."""
    seqs = [torch.tensor([vocab.bos, *vocab.unit_ids(np.asarray(it.positive.units)).tolist()]) for it in items]
    L = max(len(s) for s in seqs)
    x = torch.full((len(seqs), L), vocab.eod)
    labels = torch.full((len(seqs), L), -100)
    for i, s in enumerate(seqs):
        x[i, :len(s)] = s
        labels[i, :len(s)] = s
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=x, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return float(loss.detach())


@pytest.mark.slow  # > 10 s: the full suite runs it, the inner loop does not
@pytest.mark.slow  # > 10 s: the full suite runs it, the inner loop does not
def test_trained_model_beats_chance_random_model_does_not(vocab, shuffle_items):
    torch.set_num_threads(2)
    random_model = tiny_llama(vocab, seed=1)
    acc_random = summarize(score_items(shuffle_items, vocab, HFBackend(random_model, vocab)))["word_shuffle"]
    trained = tiny_llama(vocab, seed=1)
    final_loss = _train(trained, vocab, shuffle_items)
    acc_trained = summarize(score_items(shuffle_items, vocab, HFBackend(trained, vocab)))["word_shuffle"]
    print(f"random {acc_random['accuracy']:.3f} {acc_random['ci95']}  trained {acc_trained['accuracy']:.3f} "
          f"{acc_trained['ci95']} (final loss {final_loss:.2f})")
    assert acc_trained["accuracy"] >= 0.85
    assert acc_trained["ci95"][0] > 0.6
    assert acc_random["ci95"][0] < 0.5 < acc_random["ci95"][1] or abs(acc_random["accuracy"] - 0.5) < 0.2


@pytest.mark.parametrize("units,field", [([1, True], "'positive.units'[1] must be an integer, not True"),
                                         ([1, 3.7], "'positive.units'[1] must be an integer, not 3.7"),
                                         (["7"], "'positive.units'[0] must be an integer, not '7'")])
def test_eval_items_refuse_non_integer_units(units, field, tmp_path):
    from megatron_slm.eval.items import FORMAT, ItemError, read_items

    p = tmp_path / "items.jsonl"
    p.write_text(json.dumps({"format": FORMAT, "version": 1, "task": "t", "unit_identity": None}) + "\n"
                 + json.dumps({"id": "a", "task": "t", "positive": {"units": units}, "negatives": [{"units": [2]}]}) + "\n")
    with pytest.raises(ItemError, match=f"^{p}:2: field {field}".replace("[", r"\[")):
        read_items(p)


def test_eval_messages_name_the_item_file_line_and_the_right_restriction(vocab, tmp_path):
    from megatron_slm.eval.items import FORMAT, ItemError, read_items
    from megatron_slm.eval.scoring import allowed_mask, check_restriction, encode_items

    p = tmp_path / "items.jsonl"
    header = json.dumps({"format": FORMAT, "version": 1, "task": "t", "unit_identity": None})
    item = lambda i, pos: json.dumps({"id": i, "task": "t", "positive": pos, "negatives": [pos]})  # noqa: E731
    p.write_text("\n".join([header, item("a", {"units": [1, 2]}), item("b", {"units": [3, 150]})]) + "\n")
    with pytest.raises(ItemError, match=rf"^{p}:3: item 'b' positive: unit 150 >= the vocabulary's 100 units"):
        encode_items(read_items(p).items, vocab)
    p.write_text("\n".join([header, item("a", {"units": [1, 2]}), item("b", {"text": "the end"})]) + "\n")
    seqs, _ = encode_items(read_items(p).items, vocab)
    with pytest.raises(ItemError, match=rf"^{p}:3: item 'b' positive: restrict='speech' but .* \(score text "
                                        r"candidates with restrict=text or none\)"):
        check_restriction(seqs, allowed_mask(vocab, vocab.vocab_size, "speech"), "speech")
    with pytest.raises(ItemError, match=rf"^{p}:2: item 'a' positive: restrict='text' but .* \(score speech "
                                        r"candidates with restrict=speech or none\)"):
        check_restriction(seqs, allowed_mask(vocab, vocab.vocab_size, "text"), "text")


def test_eval_refuses_benchmark_units_from_another_kmeans_of_the_same_K(tmp_path, monkeypatch):
    from megatron_slm.eval import run as eval_run
    from megatron_slm.eval.items import Candidate, Item, ItemError, read_items, write_items
    from megatron_slm.vocab import SpeechVocab

    vocab = SpeechVocab.from_pretrained(TOKENIZER, num_units=100)
    ours = {"extractor": {"name": "mel"}, "k": 100, "sha256": "aaa", "deduplicated": True}
    theirs = dict(ours, sha256="bbb")
    items = [Item("1", "t", Candidate(units=[1, 2]), [Candidate(units=[2, 1])])]
    write_items(tmp_path / "t.jsonl", "t", items, theirs)
    model = tmp_path / "hf"
    model.mkdir()
    record.write_identity(model, {"vocab": vocab.identity(), "units": ours})
    sets = eval_run.load_sets([("t", str(tmp_path / "t.jsonl"))])
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the check depends on the model dir, not on where the command runs
    with pytest.raises(ItemError, match="different extractor"):
        eval_run.check_sets(sets, eval_run.expected_unit_identity(str(model)), vocab)
    assert read_items(tmp_path / "t.jsonl").unit_identity["sha256"] == "bbb"


def test_scoring_beyond_the_context_warns(capsys):
    from megatron_slm.eval.scoring import EncodedSeq, warn_beyond_context

    seqs = [EncodedSeq(tokens=list(range(n)), score_from=1) for n in (10, 300, 500)]
    warn_beyond_context(seqs, 256, "ssc")
    err = capsys.readouterr().err
    assert "ssc: 2 of 3 candidates are longer than the model's 256 positions (longest 500 tokens)" in err
    warn_beyond_context(seqs[:1], 256, "ssc")
    assert capsys.readouterr().err == ""
