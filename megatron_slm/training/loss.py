"""The language-model loss of a training step, per token and per modality.

Megatron pads the vocabulary (to a multiple of make_vocab_size_divisible_by x TP); by default
the padding rows take part in the softmax. We mask them out, so the model trained here and its
Hugging Face export (which trims the padding) define exactly the same distribution: the loss
logged in training is the loss the exported model gives.
"""
from __future__ import annotations

import functools
from typing import Optional

import torch

from megatron_slm.training.batches import SPEECH, TEXT


def vocab_parallel_lm_loss(logits: torch.Tensor, labels: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Per-token cross entropy [b, s] from this TP rank's logit slice [b, s, V_padded / tp],
    ignoring the padding ids >= vocab_size."""
    from megatron.core import parallel_state as ps
    from megatron.core.tensor_parallel import vocab_parallel_cross_entropy

    local = logits.size(-1)
    first = ps.get_tensor_model_parallel_rank() * local
    if first + local > vocab_size:  # this rank holds padding columns
        ids = torch.arange(first, first + local, device=logits.device)
        logits = logits.masked_fill(ids >= vocab_size, float("-inf"))
    # Megatron's kernel works on [s, b, v] and computes in fp32.
    loss = vocab_parallel_cross_entropy(logits.transpose(0, 1).contiguous().float(),
                                        labels.transpose(0, 1).contiguous())
    return loss.transpose(0, 1).contiguous()


CODEBOOK_KEYS = ("semantic_loss", "acoustic_loss")  # codec units: codebook 0, codebooks 1..n_q-1


def codebooks_of(vocab) -> Optional[tuple[int, int]]:
    """(first unit id, codes per codebook) when the vocabulary's units have several codebooks."""
    inv = getattr(vocab, "inventory", None)
    return (vocab.unit_offset, inv.codebook_size) if inv is not None and inv.num_codebooks > 1 else None


def loss_func(loss_mask: torch.Tensor, modality: torch.Tensor, output_tensor: torch.Tensor,
              labels: Optional[torch.Tensor] = None, codebooks: Optional[tuple[int, int]] = None):
    """Per-token loss sums; Megatron divides by the global token count (calculate_per_token_loss).

    `modality` gives each label token's modality so speech and text losses are reported apart;
    with `codebooks` (first unit id, K) the speech loss of a codec's semantic codebook (0) is
    reported apart from its acoustic ones.
    """
    losses = output_tensor.float()
    mask = loss_mask.float()
    total, count = (losses * mask).sum(), mask.sum()
    report = {"lm_loss": torch.stack([total.detach(), count])}
    for name, value in (("speech_loss", SPEECH), ("text_loss", TEXT)):
        m = mask * (modality == value)
        report[name] = torch.stack([(losses * m).sum().detach(), m.sum()])
    if codebooks is not None:
        speech = mask * (modality == SPEECH)
        semantic = torch.div(labels - codebooks[0], codebooks[1], rounding_mode="floor") == 0
        for name, m in zip(CODEBOOK_KEYS, (speech * semantic, speech * ~semantic)):
            report[name] = torch.stack([(losses * m).sum().detach(), m.sum()])
    return total, count.int(), report


def make_forward_step(vocab_size: int, codebooks: Optional[tuple[int, int]] = None):
    """The `forward_step_func` for Megatron's schedules."""

    def forward_step(data_iterator, model):
        batch = next(data_iterator)
        output = model(batch["tokens"], batch["position_ids"], batch["attention_mask"])
        if getattr(model, "module", model).post_process:  # last stage: logits -> per-token loss
            output = vocab_parallel_lm_loss(output, batch["labels"], vocab_size)
        return output, functools.partial(loss_func, batch["loss_mask"], batch["modality"],
                                         labels=batch.get("labels"), codebooks=codebooks)

    return forward_step


class LMObjective:
    """What a step optimises (train.objective): the forward step, the [sum, count] reports the
    trainer reduces (the first is the loss), the console columns, the sequences per sample, the
    collation and any per-step preparation of the microbatches. lm and sft share this one: SFT
    data's loss mask already holds the response targets only."""
    main_key = "lm_loss"
    rows_per_sample = 1

    def __init__(self, vocab_size: int, loss_keys: tuple, console: tuple,
                 codebooks: Optional[tuple[int, int]] = None) -> None:
        from megatron_slm.training.batches import collate

        if codebooks is not None:  # the codebook losses beside speech/text
            loss_keys = loss_keys + CODEBOOK_KEYS
            at = console.index("text_loss") + 1 if "text_loss" in console else len(console)
            console = console[:at] + CODEBOOK_KEYS + console[at:]
        self.loss_keys, self.console, self.collate = loss_keys, console, collate
        self.forward_step = make_forward_step(vocab_size, codebooks)

    def prepare(self, batches: list[dict]) -> list[dict]:
        return batches
