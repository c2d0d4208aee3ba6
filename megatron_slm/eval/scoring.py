"""Benchmark items -> token sequences -> one log-likelihood per candidate.

The SIMS recipe: a candidate is scored by the log-likelihood of its tokens
after BOS. A single-modality sequence carries no modality token (speech-only and text-only
training documents have none); a cross-modal item (prompt in one modality, continuation in the
other) is laid out like an interleaved training document -- a modality token at the start and at
every switch -- and only the continuation's tokens are scored. The score is the mean
log-probability per scored token (default) or the sum.

The softmax always runs over the real vocabulary [0, vocab_size): padded embedding rows (Megatron
pads the vocabulary, an HF export trims it) never take probability mass, so both backends give
the same numbers. `restrict="speech"|"text"` further limits it to one modality's tokens, by the
convention `compat` (megatron_slm/conventions.py):

  slamkit  SlamKit's: speech = the units plus BOS and EOS (every other text logit and both
           modality markers at -inf); text = everything but the units.
  none     speech = the units only; text = the text tokens without BOS/EOS/pad and markers.

Targets are never masked by id (SlamKit drops targets equal to its pad id 0, a real token).

Backends (megatron_slm.eval.likelihood) implement `score(seqs) -> np.ndarray[n, 2]` of
(sum of log-probabilities, scored token count) per sequence.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Literal, Optional, Protocol, Sequence

import numpy as np
import torch

from megatron_slm import document
from megatron_slm.batching import length_buckets
from megatron_slm.eval.items import Candidate, Item, ItemError

Restrict = Optional[Literal["speech", "text"]]
Prefer = Literal["units", "text"]


@dataclass
class EncodedSeq:
    tokens: np.ndarray  # int64 [L], starts with BOS
    score_from: int  # tokens[score_from:] are scored (each predicted from its prefix)
    where: str = ""  # the item it encodes (file:line, id, candidate), for messages

    @property
    def num_scored(self) -> int:
        return len(self.tokens) - self.score_from


class Backend(Protocol):
    def score(self, seqs: Sequence[EncodedSeq]) -> np.ndarray:  # [n, 2] float64: (sum logp, count)
        ...


# --------------------------------------------------------------------------- encoding


def _segment(cand: Candidate, vocab, prefer: Prefer, where: str, loss: bool = True) -> document.Segment:
    """The candidate as one segment (units win over text unless prefer='text')."""
    use_units = cand.units is not None and (prefer == "units" or cand.text is None)
    if use_units:
        if max(cand.units) >= vocab.num_units:
            raise ItemError(f"{where}: unit {max(cand.units)} >= the vocabulary's {vocab.num_units} units")
        return document.speech(vocab, cand.units, loss)
    seg = document.text(vocab, cand.text, loss=loss)
    if not len(seg.ids):
        raise ItemError(f"{where}: text {cand.text!r} encodes to no tokens")
    return seg


def encode_candidate(cand: Candidate, prompt: Optional[Candidate], vocab, prefer: Prefer = "units",
                     where: str = "item") -> EncodedSeq:
    """BOS, the prompt (not scored), the candidate (scored), laid out by document.py: markers only
    when the prompt and the candidate differ in modality."""
    if vocab.bos is None:
        raise ItemError("the tokenizer has no BOS token; the SIMS recipe scores every candidate after BOS")
    segments = [_segment(cand, vocab, prefer, where)]
    if prompt is not None:
        segments.insert(0, _segment(prompt, vocab, prefer, where + ".prompt", loss=False))
        if segments[0].modality == document.SPEECH and segments[1].modality == document.TEXT:
            segments[1] = document.text(vocab, cand.text, after_speech=True)  # its leading space, as in training
    doc = document.layout(segments, document.Markers.of(vocab))
    return EncodedSeq(doc.ids, doc.first_scored, where)


def encode_items(items: Sequence[Item], vocab, prefer: Prefer = "units") -> tuple[list[EncodedSeq], list[tuple[int, int]]]:
    """Flatten items to sequences; returns (seqs, spans) with item i's candidates at seqs[a:b]
    (positive first)."""
    seqs: list[EncodedSeq] = []
    spans: list[tuple[int, int]] = []
    for item in items:
        start = len(seqs)
        for j, cand in enumerate(item.candidates()):
            where = (f"{item.where}: " if item.where else "") + f"item {item.id!r} " + \
                ("positive" if j == 0 else f"negative {j - 1}")
            seqs.append(encode_candidate(cand, item.prompt, vocab, prefer, where))
        spans.append((start, len(seqs)))
    return seqs, spans


# --------------------------------------------------------------------------- vocabulary mask


def allowed_mask(vocab, vocab_size: int, restrict: Restrict = None, compat: str = "none") -> torch.Tensor:
    """Bool [vocab_size] of ids the softmax may put mass on: real ids only (no padding rows),
    optionally one modality only (the module docstring gives both conventions)."""
    ids = np.arange(vocab_size)
    allowed = ids < vocab.vocab_size
    if restrict is None:
        return torch.from_numpy(allowed)
    modality = vocab.modality_of(ids)
    if compat == "slamkit":
        units = (ids >= vocab.unit_offset) & (ids < vocab.speech_id)
        if restrict == "speech":
            specials = [t for t in (vocab.bos, vocab.eod) if t is not None]
            allowed &= units | np.isin(ids, specials)
        else:
            allowed &= ~units
    else:
        allowed &= modality == {"speech": 1, "text": 0}[restrict]
    return torch.from_numpy(allowed)


def check_restriction(seqs: Sequence[EncodedSeq], allowed: torch.Tensor, restrict: Restrict) -> None:
    if restrict is None:
        return
    ok = allowed.numpy()
    other = {"speech": "text", "text": "speech"}[restrict]
    for i, s in enumerate(seqs):
        scored = s.tokens[s.score_from:]
        if not ok[scored].all():
            raise ItemError(f"{s.where or f'sequence {i}'}: restrict={restrict!r} but it scores tokens outside the "
                            f"{restrict} vocabulary (score {other} candidates with restrict={other} or none)")


# --------------------------------------------------------------------------- batching


def make_batches(lengths: Sequence[int], max_tokens: int, max_batch: int) -> list[list[int]]:
    """Group sequence indices by length (longest first) so padding stays small; a batch holds
    at most `max_batch` sequences and `max_tokens` padded tokens (a longer sequence goes alone)."""
    return length_buckets(lengths, max_tokens, max_batch, longest_first=True)


def collate(seqs: Sequence[EncodedSeq], idx: Sequence[int], pad_id: int, length: Optional[int] = None):
    """Right-padded inputs plus next-token targets and the mask of scored targets.

    Returns tokens [b, L], targets [b, L] (tokens shifted left), score_mask [b, L] float.
    Position t predicts targets[t] = tokens[t+1]; padding is never scored, and right padding
    cannot change earlier positions under a causal mask."""
    L = length or max(len(seqs[i].tokens) for i in idx)
    b = len(idx)
    tokens = np.full((b, L), pad_id, dtype=np.int64)
    targets = np.full((b, L), pad_id, dtype=np.int64)
    mask = np.zeros((b, L), dtype=np.float32)
    for r, i in enumerate(idx):
        t = seqs[i].tokens
        tokens[r, :len(t)] = t
        targets[r, :len(t) - 1] = t[1:]
        mask[r, seqs[i].score_from - 1:len(t) - 1] = 1.0
    return torch.from_numpy(tokens), torch.from_numpy(targets), torch.from_numpy(mask)


def masked_logprobs(logits: torch.Tensor, targets: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """log p(target) [b, s] under a softmax over the allowed ids (full, unsharded logits)."""
    V = logits.shape[-1]
    allow = allowed[:V].to(logits.device)
    if allowed.shape[0] < V:  # the model has more rows than the vocabulary: never allowed
        allow = torch.cat([allow, torch.zeros(V - allowed.shape[0], dtype=torch.bool, device=logits.device)])
    x = logits.float().masked_fill(~allow, float("-inf"))
    return torch.log_softmax(x, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


# --------------------------------------------------------------------------- item scores


@dataclass
class ItemScore:
    id: str
    task: str
    part: Optional[str]
    positive: float
    negatives: list[float]

    @property
    def outcome(self) -> float:
        """1 if the positive beats every negative, 0 if some negative beats it, and 1/(1+t) when
        it ties with t negatives at the top (ties count 0.5 with one negative)."""
        best = max(self.negatives)
        if self.positive > best:
            return 1.0
        if self.positive < best:
            return 0.0
        return 1.0 / (1 + sum(1 for n in self.negatives if n == best))


def warn_beyond_context(seqs: Sequence[EncodedSeq], max_positions: Optional[int], task: str) -> None:
    """Scores of sequences longer than the model's positions extrapolate past what it was
    trained on: score them (the user asked) but say how many and how long."""
    if not max_positions:
        return
    long = [len(s.tokens) for s in seqs if len(s.tokens) > max_positions]
    if long:
        print(f"warning: {task}: {len(long)} of {len(seqs)} candidates are longer than the model's "
              f"{max_positions} positions (longest {max(long)} tokens); their scores extrapolate past its context",
              file=sys.stderr)


def score_items(items: Sequence[Item], vocab, backend: Backend, reduce: Literal["mean", "sum"] = "mean",
                prefer: Prefer = "units") -> list[ItemScore]:
    seqs, spans = encode_items(items, vocab, prefer)
    warn_beyond_context(seqs, getattr(backend, "max_positions", None), items[0].task if items else "")
    raw = np.asarray(backend.score(seqs), dtype=np.float64)
    if raw.shape != (len(seqs), 2):
        raise RuntimeError(f"backend returned shape {raw.shape}, expected {(len(seqs), 2)}")
    expected = np.asarray([s.num_scored for s in seqs], dtype=np.float64)
    if not np.array_equal(raw[:, 1], expected):
        raise RuntimeError("backend scored a different number of tokens than requested (padding/mask bug)")
    vals = raw[:, 0] / raw[:, 1] if reduce == "mean" else raw[:, 0]
    out = []
    for item, (a, b) in zip(items, spans):
        out.append(ItemScore(item.id, item.task, item.part, float(vals[a]), [float(v) for v in vals[a + 1:b]]))
    return out
