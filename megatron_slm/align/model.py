"""A local CTC acoustic model (a wav2vec2-style `*ForCTC` directory with its processor) as frame
log-probabilities, and transcripts as its tokens.

    model = CTCModel.load("/models/wav2vec2-base-960h", device="cpu")
    logp = model.emissions([wave])[0]          # [frames, vocab] log-softmax, model.frame_seconds apart
    model.word_tokens("time,")                  # [T, I, M, E] ids: case matched to the vocabulary, others dropped

Char-level CTC vocabularies (the wav2vec2 / HuBERT / data2vec CTC fine-tunes) are what this
expects: a word becomes the ids of its characters; characters the vocabulary lacks (punctuation)
are dropped, and a word with none left cannot be aligned (the caller reports it). The blank is
the tokenizer's pad token; the word delimiter (`|`) is folded into the blank, since it is what
the model emits in the gaps between words.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np


@dataclasses.dataclass
class CTCModel:
    model: object
    feature_extractor: object
    vocab: dict[str, int]
    blank: int
    delimiter: Optional[int]
    sample_rate: int
    frame_seconds: float
    device: str
    padded_batches: bool  # the model takes an attention mask, so padded batches give exact emissions
    identity: dict

    @classmethod
    def load(cls, model_dir: str, device: str = "cpu") -> "CTCModel":
        import torch
        from transformers import AutoFeatureExtractor, AutoModelForCTC, AutoTokenizer

        try:
            model = AutoModelForCTC.from_pretrained(model_dir).to(device).eval()
            tok = AutoTokenizer.from_pretrained(model_dir)
            fe = AutoFeatureExtractor.from_pretrained(model_dir)
        except (OSError, ValueError, KeyError) as e:
            raise ValueError(f"{model_dir}: not a local CTC model directory with its tokenizer and feature "
                             f"extractor ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
        vocab = dict(tok.get_vocab())
        blank = tok.pad_token_id if tok.pad_token_id is not None else model.config.pad_token_id
        if blank is None:
            raise ValueError(f"{model_dir}: the tokenizer names no pad (CTC blank) token")
        delim = getattr(tok, "word_delimiter_token", None)
        ratio = getattr(model.config, "inputs_to_logits_ratio", None)
        if not ratio:
            ratio = int(np.prod(getattr(model.config, "conv_stride", [320])))
        sr = int(getattr(fe, "sampling_rate", 16000))
        return cls(model, fe, vocab, int(blank), vocab.get(delim) if delim else None, sr, ratio / sr, device,
                   bool(getattr(fe, "return_attention_mask", False)),
                   {"model_dir": model_dir, "model_type": model.config.model_type, "vocab_size": len(vocab),
                    "frame_seconds": ratio / sr})

    # ------------------------------------------------------------------ text

    def word_tokens(self, word: str) -> list[int]:
        """The ids of a word's characters in the case the vocabulary knows best; [] if none."""
        best: list[int] = []
        for variant in (word, word.upper(), word.lower()):
            ids = [self.vocab[c] for c in variant if c in self.vocab and self.vocab[c] not in self._special]
            if len(ids) > len(best):
                best = ids
        return best

    @property
    def _special(self) -> set:
        return {self.blank} | ({self.delimiter} if self.delimiter is not None else set())

    # ------------------------------------------------------------------ audio

    def emissions(self, waves: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Log-softmax frames [T_i, V] for mono float32 waves at `sample_rate`; the delimiter's
        probability is added to the blank's (both mean "between words")."""
        import torch

        with torch.inference_mode():
            return self._emissions(waves)

    def _emissions(self, waves: Sequence[np.ndarray]) -> list[np.ndarray]:
        import torch

        groups = [list(range(len(waves)))] if self.padded_batches else [[i] for i in range(len(waves))]
        out: list[Optional[np.ndarray]] = [None] * len(waves)
        for idx in groups:
            batch = self.feature_extractor([np.asarray(waves[i], np.float32) for i in idx], sampling_rate=self.sample_rate,
                                           return_tensors="pt", padding=True, return_attention_mask=self.padded_batches)
            kw = {"attention_mask": batch["attention_mask"].to(self.device)} if self.padded_batches else {}
            logits = self.model(batch["input_values"].to(self.device), **kw).logits.float()
            logp = torch.log_softmax(logits, dim=-1)
            if self.delimiter is not None:
                gap = torch.logaddexp(logp[..., self.blank], logp[..., self.delimiter])
                logp[..., self.blank] = gap
                logp[..., self.delimiter] = float("-inf")
            lengths = torch.tensor([len(waves[i]) for i in idx])
            frames = self.model._get_feat_extract_output_lengths(lengths).tolist()
            for r, i in enumerate(idx):
                out[i] = logp[r, : int(frames[r])].cpu().numpy()
        return out
