"""Generation with multi-codebook (codec) units: masks keep frames whole and in codebook order, a
stopped continuation never ends inside a frame, and the Mimi decoder as vocoder (frames x 1920
samples at 24 kHz; a Mimi of other weights or another codebook count is refused)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from megatron_slm.generate.decode import decode
from megatron_slm.generate.sampling import GenerationError, SamplingConfig, TokenPolicy
from megatron_slm.vocab import SpeechVocab, UnitInventory

from conftest import TOKENIZER
K, NQ = 8, 3


class RandomLogits:
    """A LogitsSource whose logits are random (seeded), so nothing but the masks orders the output."""

    samples = True
    pad_id = 0

    def __init__(self, rows: int, context: int = 512, seed: int = 0, favour: tuple[int, ...] = ()):
        self.rows, self.context, self.g, self.favour = rows, context, torch.Generator().manual_seed(seed), favour

    def _logits(self, b):
        x = torch.randn(b, self.rows, generator=self.g) * 3
        x[:, list(self.favour)] += 4.0  # stops and markers often on top: the masks must hold them back
        return x

    def begin(self, prompts, new_tokens):
        return self._logits(len(prompts))

    def advance(self, ids):
        return self._logits(len(ids))

    def agree(self, ids, batch):
        return ids

    def end(self):
        pass


@pytest.fixture(scope="module")
def vocab():
    return SpeechVocab.from_pretrained(TOKENIZER, inventory=UnitInventory(K, NQ, "mimi", 12.5))


def codebooks_of(vocab, ids):
    return [(i - vocab.unit_offset) // K for i in ids]


@pytest.mark.parametrize("output", ["speech", "any"])
@pytest.mark.parametrize("max_new", [31, 5])
def test_continuations_are_whole_frames_in_codebook_order(vocab, output, max_new):
    policy = TokenPolicy.for_output(vocab, vocab.vocab_size + 6, output)
    frame_start = list(vocab.unit_ids(np.array([[1, 2, 3]])).reshape(-1))
    prompts = [[vocab.bos, vocab.speech_id] + frame_start * 2, [vocab.bos, vocab.text_id, 5, 6, vocab.speech_id]]
    stops = seen_ids = 0
    for seed in range(4):
        src = RandomLogits(vocab.vocab_size + 6, seed=seed, favour=(vocab.eod, vocab.text_id, vocab.speech_id))
        cfg = SamplingConfig(temperature=1.0, top_k=0, max_new_tokens=max_new, seed=seed)
        for cont in decode(src, prompts, ["a", "b"], policy, cfg):
            run = 0
            for tok in cont.ids:  # every run of units: whole frames, codebook q at place q
                if vocab.unit_offset <= tok < vocab.speech_id:
                    assert (tok - vocab.unit_offset) // K == run % NQ, cont.ids
                    run += 1
                else:
                    assert run % NQ == 0, cont.ids
                    run = 0
            assert run % NQ == 0, cont.ids
            stops += cont.stop in ("eos", "modality_switch")
            seen_ids += len(cont.ids)
    assert seen_ids and (stops or max_new == 5)


def test_one_codebook_policy_unchanged():
    vocab = SpeechVocab.from_pretrained(TOKENIZER, num_units=100)
    policy = TokenPolicy.for_output(vocab, vocab.vocab_size, "speech")
    assert policy.frame is None and policy.allowed_rows([0, 0]) is policy.allowed


@pytest.fixture(scope="module")
def mimi_dir(tmp_path_factory):
    from megatron_slm.testing.tiny_mimi import save_tiny_mimi

    return save_tiny_mimi(tmp_path_factory.mktemp("mimi") / "mimi")


def test_mimi_vocoder_writes_frames_x_1920_samples(mimi_dir, tmp_path):
    import wave

    from megatron_slm.generate.vocoders import check_vocoder, load_vocoder, write_wav
    from megatron_slm.units.mimi import MimiCodec

    inv = UnitInventory(256, 2, "mimi", 12.5)
    vocoder = load_vocoder(mimi_dir, inventory=inv)
    assert (vocoder.num_units, vocoder.sample_rate) == (512, 24000)
    codes = np.random.default_rng(0).integers(0, 256, size=(7, 2))
    wav = vocoder(inv.flatten(codes).tolist())
    assert wav.shape == (7 * 1920,) and wav.dtype == np.float32 and np.isfinite(wav).all()
    write_wav(str(tmp_path / "x.wav"), wav, vocoder.sample_rate)
    with wave.open(str(tmp_path / "x.wav")) as f:
        assert (f.getnframes(), f.getframerate()) == (7 * 1920, 24000)
    with pytest.raises(GenerationError, match="not a whole number of 2-codebook frames"):
        vocoder(inv.flatten(codes).tolist()[:-1])

    # the model's units identity: the codec the units came from
    codec = MimiCodec.from_pretrained(mimi_dir, 2)
    from megatron_slm.units.records import compatibility_key, make_codec_meta

    own = compatibility_key(make_codec_meta(codec.identity()))
    check_vocoder(vocoder, 512, own)
    other = dict(own, tokenizer=dict(own["tokenizer"], weights_sha256="f" * 64))
    with pytest.raises(GenerationError, match="weights_sha256"):
        check_vocoder(vocoder, 512, other)
    with pytest.raises(GenerationError, match="K=512 units but the model vocabulary has K=768"):
        check_vocoder(vocoder, 768, own)
