"""A model trained on the bundled corpus (150 plain-torch steps on its unit sequences)
continues corpus prompts with a higher mean log-likelihood than a random-init model's continuations
-- judged by the trained model, and each by its own model."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from megatron_slm.eval.scoring import allowed_mask, masked_logprobs
from megatron_slm.generate.backends import HFSource
from megatron_slm.generate.decode import decode
from megatron_slm.generate.prompts import encode_prompt, read_prompt_file
from megatron_slm.generate.sampling import SamplingConfig, TokenPolicy
from megatron_slm.testing.tiny_slm import CORPUS, make_tiny_slm
from megatron_slm.units.records import iter_records
from megatron_slm.vocab import SpeechVocab

K = 100


def _train(model, vocab, steps=150, batch=8, length=96, seed=0):
    """Next-token training on speech-only documents [BOS, units..., EOS] of the corpus."""
    docs = [np.concatenate([[vocab.bos], vocab.unit_ids(r.units), [vocab.eod]])
            for r in iter_records(CORPUS / "units.jsonl")]
    rng = np.random.default_rng(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    model.train()
    for _ in range(steps):
        rows = []
        for d in rng.integers(0, len(docs), batch):
            doc = docs[d]
            s = rng.integers(0, max(1, len(doc) - length))
            rows.append(np.pad(doc[s:s + length], (0, max(0, length - len(doc[s:s + length]))), constant_values=-100))
        x = torch.from_numpy(np.stack(rows)).long()
        loss = model(input_ids=x.clamp(min=0), labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), float(loss)


@torch.no_grad()
def _mean_ll(model, vocab, prompt_ids, cont_ids):
    """Mean log p of the continuation tokens (softmax over the real vocabulary)."""
    seq = torch.tensor([list(prompt_ids) + list(cont_ids)])
    logits = model(input_ids=seq).logits[:, len(prompt_ids) - 1:-1]
    lp = masked_logprobs(logits, seq[:, len(prompt_ids):], allowed_mask(vocab, logits.shape[-1]))
    return float(lp.mean())


@pytest.mark.slow  # > 10 s: the full suite runs it, the inner loop does not
def test_trained_model_continues_corpus_prompts_more_likely_than_random_init(tmp_path):
    from transformers import AutoModelForCausalLM

    _, hf = make_tiny_slm(tmp_path, num_units=K, tp=1, pp=1)
    vocab = SpeechVocab.from_pretrained(hf, num_units=K)
    random_init = AutoModelForCausalLM.from_pretrained(hf, local_files_only=True).eval()
    torch.manual_seed(0)
    trained, final_loss = _train(copy.deepcopy(random_init), vocab)
    assert final_loss < 3.5  # from ~ln(614) = 6.4: it learned the corpus' unit statistics

    prompts = read_prompt_file(str(CORPUS / "units.jsonl"), seconds=3.0).prompts[::4]
    ids = [encode_prompt(p, vocab, "speech") for p in prompts]
    cfg = SamplingConfig.preset("slamkit", max_new_tokens=40, seed=1)
    conts = {}
    for name, model in (("trained", trained), ("random", random_init)):
        src = HFSource(model, vocab)
        policy = TokenPolicy.for_output(vocab, src.rows, "speech")
        conts[name] = decode(src, ids, [p.id for p in prompts], policy, cfg)
        assert all(all(vocab.unit_offset <= t < vocab.speech_id for t in c.ids) for c in conts[name])
    judge = {name: np.mean([_mean_ll(trained, vocab, p, c.ids) for p, c in zip(ids, conts[name]) if c.ids])
             for name in conts}
    own = {name: np.mean([_mean_ll(m, vocab, p, c.ids) for p, c in zip(ids, conts[name]) if c.ids])
           for name, m in (("trained", trained), ("random", random_init))}
    assert judge["trained"] > judge["random"] + 0.5, judge
    assert own["trained"] > own["random"] + 0.5, own
    # greedy decoding of the trained model is deterministic
    src = HFSource(trained, vocab)
    policy = TokenPolicy.for_output(vocab, src.rows, "speech")
    g1 = decode(src, ids, [p.id for p in prompts], policy, SamplingConfig(greedy=True, max_new_tokens=30))
    g2 = decode(src, ids[::-1], [p.id for p in prompts][::-1], policy, SamplingConfig(greedy=True, max_new_tokens=30))
    assert [c.ids for c in g1] == [c.ids for c in g2[::-1]]
