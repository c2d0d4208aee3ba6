"""A tiny random Whisper (model + processor) written to a directory, built offline: a byte-level BPE
trained on a few sentences gives the vocab.json/merges.txt a WhisperTokenizer needs, plus
Whisper's special tokens. For GenPPL plumbing tests; it transcribes nothing meaningful.
"""
from __future__ import annotations

from pathlib import Path

SPECIALS = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|translate|>",
            "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>"]


def make_tiny_whisper(out: str | Path, seed: int = 0) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (GenerationConfig, WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration,
                              WhisperProcessor, WhisperTokenizer)

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(["once upon a time a little girl named lily had a big red ball",
                             "every day she played with the ball in the green park"], trainer)
    bpe.model.save(str(out))
    eot = SPECIALS[0]
    tok = WhisperTokenizer(str(out / "vocab.json"), str(out / "merges.txt"), unk_token=eot, bos_token=eot,
                           eos_token=eot, pad_token=eot)
    tok.add_special_tokens({"additional_special_tokens": SPECIALS[1:]})
    ids = dict(zip(SPECIALS, tok.convert_tokens_to_ids(SPECIALS)))
    processor = WhisperProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=80), tokenizer=tok)
    cfg = WhisperConfig(vocab_size=len(tok), num_mel_bins=80, encoder_layers=1, decoder_layers=1,
                        encoder_attention_heads=2, decoder_attention_heads=2, d_model=32, encoder_ffn_dim=64,
                        decoder_ffn_dim=64, max_source_positions=1500, max_target_positions=448,
                        pad_token_id=ids[eot], bos_token_id=ids[eot], eos_token_id=ids[eot],
                        decoder_start_token_id=ids["<|startoftranscript|>"])
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(cfg)
    model.generation_config = GenerationConfig(decoder_start_token_id=ids["<|startoftranscript|>"],
                                               eos_token_id=ids[eot], pad_token_id=ids[eot],
                                               no_timestamps_token_id=ids["<|notimestamps|>"], max_length=448)
    model.save_pretrained(str(out))
    processor.save_pretrained(str(out))
    return out
