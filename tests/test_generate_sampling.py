"""Token choice: modality masks (padding rows too), stop tokens, temperature / top-k / top-p /
repetition penalty against hand-computed values, and per-prompt seeded draws."""
from __future__ import annotations

import math

import pytest
import torch

from megatron_slm.generate.sampling import (STOP_EOS, STOP_SWITCH, GenerationError, SamplingConfig, TokenPolicy,
                                            filtered_probs, mask_logits, next_tokens, prompt_generator)
from megatron_slm.vocab import SpeechVocab
from megatron_slm.testing.tiny_slm import TOKENIZER

K = 100


@pytest.fixture(scope="module")
def vocab():
    return SpeechVocab.from_pretrained(TOKENIZER, num_units=K)


def test_speech_policy_allows_units_eos_and_the_text_marker_only(vocab):
    rows = vocab.vocab_size + 154  # Megatron pads the vocabulary
    pol = TokenPolicy.for_output(vocab, rows, "speech")
    allowed = set(torch.nonzero(pol.allowed).flatten().tolist())
    assert allowed == set(range(vocab.unit_offset, vocab.unit_offset + K)) | {vocab.eod, vocab.text_id}
    assert pol.stops == {vocab.eod: STOP_EOS, vocab.text_id: STOP_SWITCH}
    assert not pol.allowed[vocab.vocab_size:].any()  # padding rows
    no_switch = TokenPolicy.for_output(vocab, rows, "speech", stop_at_switch=False)
    assert not no_switch.allowed[vocab.text_id] and no_switch.stops == {vocab.eod: STOP_EOS}


def test_text_policy_allows_text_ids_eos_and_the_speech_marker_only(vocab):
    pol = TokenPolicy.for_output(vocab, vocab.vocab_size, "text")
    allowed = torch.nonzero(pol.allowed).flatten()
    assert (allowed < vocab.unit_offset).sum() == vocab.unit_offset - len({vocab.eod, vocab.bos, vocab.pad}) + 1
    assert not pol.allowed[vocab.unit_offset:vocab.speech_id].any()
    assert pol.allowed[vocab.speech_id] and not pol.allowed[vocab.text_id]
    assert vocab.bos == vocab.eod or not pol.allowed[vocab.bos]
    anyp = TokenPolicy.for_output(vocab, vocab.vocab_size + 10, "any")
    assert anyp.allowed[:vocab.vocab_size].sum() >= vocab.vocab_size - 1 and not anyp.allowed[vocab.vocab_size:].any()


def test_policy_rejects_unknown_modality_and_short_models(vocab):
    with pytest.raises(GenerationError, match="unknown output modality 'video'"):
        TokenPolicy.for_output(vocab, vocab.vocab_size, "video")
    with pytest.raises(GenerationError, match="output rows"):
        TokenPolicy.for_output(vocab, vocab.vocab_size - 3, "speech")


def test_masked_argmax_never_leaves_the_modality(vocab):
    g = torch.Generator().manual_seed(0)
    rows = vocab.vocab_size + 50
    logits = torch.randn(64, rows, generator=g)
    logits[:, vocab.vocab_size:] += 100.0  # padding rows look best: must never be drawn
    logits[:, :vocab.unit_offset] += 10.0  # text looks best
    for out, lo, hi in (("speech", vocab.unit_offset, vocab.speech_id), ("text", 0, vocab.unit_offset)):
        pol = TokenPolicy.for_output(vocab, rows, out, stop_at_switch=False)
        for cfg in (SamplingConfig(greedy=True), SamplingConfig(temperature=5.0, top_k=0)):
            gens = [torch.Generator().manual_seed(i) for i in range(64)]
            ids = next_tokens(logits, pol, cfg, gens)
            ok = ((ids >= lo) & (ids < hi)) | (ids == vocab.eod)
            assert ok.all(), ids[~ok]


def test_top_k_top_p_temperature_match_hand_values():
    policy = TokenPolicy(torch.ones(5, dtype=torch.bool), {}, "any")
    x = torch.log(torch.tensor([[0.5, 0.2, 0.15, 0.1, 0.05]]))
    p = filtered_probs(mask_logits(x, policy, SamplingConfig()), SamplingConfig(temperature=1.0, top_k=2))
    assert torch.allclose(p, torch.tensor([[0.5 / 0.7, 0.2 / 0.7, 0, 0, 0]]))
    # nucleus 0.8: 0.5 + 0.2 < 0.8, so 0.15 joins; 0.1 is past the mass
    p = filtered_probs(x, SamplingConfig(temperature=1.0, top_k=0, top_p=0.8))
    assert torch.allclose(p, torch.tensor([[0.5, 0.2, 0.15, 0, 0]]) / 0.85)
    # temperature 0.5 squares the probabilities (then renormalises)
    p = filtered_probs(x, SamplingConfig(temperature=0.5, top_k=0))
    q = torch.tensor([[0.5, 0.2, 0.15, 0.1, 0.05]]) ** 2
    assert torch.allclose(p, q / q.sum())


def test_repetition_penalty_follows_the_hf_rule():
    policy = TokenPolicy(torch.ones(3, dtype=torch.bool), {}, "any")
    x = torch.tensor([[2.0, -1.0, 0.5]])
    seen = torch.tensor([[True, True, False]])
    y = mask_logits(x, policy, SamplingConfig(repetition_penalty=2.0), seen)
    assert y.tolist() == [[1.0, -2.0, 0.5]]


def test_config_validation_and_presets():
    s = SamplingConfig.preset("slamkit")
    assert (s.temperature, s.top_k, s.top_p, s.max_new_tokens) == (0.8, 25, 1.0, 150)
    sp = SamplingConfig.preset("spiritlm", max_new_tokens=50)
    assert (sp.temperature, sp.top_k, sp.top_p, sp.max_new_tokens) == (0.9, 0, 0.95, 50)
    for bad in (dict(temperature=0.0), dict(top_p=0.0), dict(top_k=-1), dict(max_new_tokens=0)):
        with pytest.raises(GenerationError):
            SamplingConfig(**bad)
    assert "temperature" not in SamplingConfig(greedy=True).to_json()


def test_each_prompt_draws_the_same_tokens_whatever_its_batch():
    policy = TokenPolicy(torch.ones(50, dtype=torch.bool), {}, "any")
    cfg = SamplingConfig(temperature=1.0, top_k=0)
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(1))

    def draw(rows, keys, steps=20):
        gens = [prompt_generator(7, k) for k in keys]
        return torch.stack([next_tokens(logits[rows], policy, cfg, gens) for _ in range(steps)], 1)

    alone = draw([1], ["b"])
    together = draw([0, 1, 2], ["a", "b", "c"])
    assert torch.equal(alone[0], together[1])
    assert not torch.equal(together[0], together[1])  # different prompts, different streams
    assert torch.equal(draw([0, 1, 2], ["a", "b", "c"]), together)  # reproducible
    other_seed = torch.stack([next_tokens(logits[[1]], policy, cfg, [prompt_generator(8, "b")]) for _ in range(20)], 1)
    assert not torch.equal(other_seed[0], alone[0])


def test_sampled_frequencies_follow_the_filtered_distribution():
    policy = TokenPolicy(torch.ones(4, dtype=torch.bool), {}, "any")
    probs = torch.tensor([0.6, 0.3, 0.08, 0.02])
    cfg = SamplingConfig(temperature=1.0, top_k=2)
    logits = torch.log(probs).expand(4000, 4)
    ids = next_tokens(logits, policy, cfg, [prompt_generator(0, str(i)) for i in range(4000)])
    freq = torch.bincount(ids, minlength=4).float() / 4000
    assert freq[2] == 0 and freq[3] == 0
    assert math.isclose(float(freq[0]), 2 / 3, abs_tol=0.03)
