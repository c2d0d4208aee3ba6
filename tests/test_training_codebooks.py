"""Codec units in training: the speech loss of the semantic codebook (0) reported apart from the
acoustic codebooks, beside speech/text; one-codebook vocabularies report what they always did."""
import torch

from megatron_slm.training.batches import SPEECH, TEXT
from megatron_slm.training.loss import CODEBOOK_KEYS, LMObjective, codebooks_of, loss_func
from megatron_slm.vocab import SpeechVocab, UnitInventory

from conftest import TOKENIZER


def test_semantic_and_acoustic_losses():
    vocab = SpeechVocab.from_pretrained(TOKENIZER, inventory=UnitInventory(4, 3, "mimi"))
    cb = codebooks_of(vocab)
    assert cb == (vocab.unit_offset, 4)
    V = vocab.unit_offset
    labels = torch.tensor([[5, V + 1, V + 5, V + 9, V + 2, V + 6, V + 10, vocab.eod]])
    modality = torch.tensor([[TEXT, SPEECH, SPEECH, SPEECH, SPEECH, SPEECH, SPEECH, 2]])
    losses = torch.arange(1.0, 9.0)[None]
    mask = torch.ones(1, 8)
    mask[0, 4] = 0  # a masked semantic target
    total, count, rep = loss_func(mask, modality, losses, labels=labels, codebooks=cb)
    assert rep["semantic_loss"].tolist() == [2.0, 1.0]  # only label V+1 (position 1) counts
    assert rep["acoustic_loss"].tolist() == [3 + 4 + 6 + 7, 4.0]
    assert rep["speech_loss"].tolist() == [2 + 3 + 4 + 6 + 7, 5.0]
    obj = LMObjective(vocab.vocab_size, ("lm_loss", "speech_loss", "text_loss"), ("iteration", "lm_loss", "text_loss",
                                                                                   "lr"), cb)
    assert obj.loss_keys[-2:] == CODEBOOK_KEYS and obj.console == ("iteration", "lm_loss", "text_loss") + CODEBOOK_KEYS + ("lr",)


def test_one_codebook_reports_unchanged():
    vocab = SpeechVocab.from_pretrained(TOKENIZER, num_units=20)
    assert codebooks_of(vocab) is None
    _, _, rep = loss_func(torch.ones(1, 2), torch.tensor([[SPEECH, TEXT]]), torch.ones(1, 2))
    assert set(rep) == {"lm_loss", "speech_loss", "text_loss"}
