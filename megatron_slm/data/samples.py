"""A training sample from a packed sequence of token ids: inputs, labels, loss mask, modality.

    make_sample(ids, vocab, pad_id, loss_on="all", attention_across_documents=True)
      -> {"tokens", "labels", "loss_mask", "modality", "position_ids", ["attention_mask"]}

`modality` is that of the *label* (0 text, 1 speech, 2 other). Padding is masked by id (or by
negative ids when the tokenizer has no pad: Megatron then pads with -1).
"""
from __future__ import annotations

import numpy as np

from megatron_slm.vocab import MODALITY_SPEECH, MODALITY_TEXT

NO_PAD = -1  # Megatron's "no pad token" sentinel: never a real id


def make_sample(text: np.ndarray, vocab, pad_id: int, loss_on: str = "all", attention_across_documents: bool = True,
                padding_sample: bool = False) -> dict[str, np.ndarray]:
    """`text` holds seq_length + 1 ids; `padding_sample` (Megatron's idx=None) gets no loss."""
    text = np.asarray(text, dtype=np.int64)
    tokens, labels = text[:-1].copy(), text[1:].copy()
    pad = labels == pad_id if pad_id != NO_PAD else labels < 0
    modality = vocab.modality_of(labels)
    loss_mask = ~pad
    if loss_on == "speech":
        loss_mask &= modality == MODALITY_SPEECH
    elif loss_on == "text":
        loss_mask &= modality == MODALITY_TEXT
    if padding_sample:
        loss_mask[:] = False
    if pad_id == NO_PAD:  # Megatron's -1 padding is no id: any real one will do (it has no loss)
        tokens[tokens < 0] = 0
        labels[labels < 0] = 0
    sample = {"tokens": tokens, "labels": labels, "loss_mask": loss_mask.astype(np.float32), "modality": modality}
    if attention_across_documents:
        sample["position_ids"] = np.arange(len(tokens), dtype=np.int64)
    else:
        sample["attention_mask"], sample["position_ids"] = document_mask(tokens, vocab.eod)
    return sample


def document_mask(tokens: np.ndarray, eod: int) -> tuple[np.ndarray, np.ndarray]:
    """Block-diagonal causal mask ([1, s, s] bool, True = masked) and per-document positions;
    a document ends with (and includes) its EOD token."""
    s = len(tokens)
    seg = np.concatenate(([0], np.cumsum(tokens[:-1] == eod)))
    mask = (seg[:, None] != seg[None, :]) | np.triu(np.ones((s, s), dtype=bool), k=1)
    starts = np.flatnonzero(np.concatenate(([True], seg[1:] != seg[:-1])))
    positions = np.arange(s) - starts[seg]
    return mask[None], positions.astype(np.int64)
