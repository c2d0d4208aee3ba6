"""Where log-likelihoods come from: an HF causal LM, or Megatron GPTModels at any TP/PP/DP.

Both implement `score(seqs) -> np.ndarray[n, 2]` = (sum of log p over scored tokens, count) per
`EncodedSeq`, with the same batching (megatron_slm.eval.scoring.make_batches), the same
right-padding and the same softmax over the real vocabulary, so the two agree to float error.

Megatron: the batches are split across data-parallel ranks; each batch runs through the
forward-only pipeline schedule (`get_forward_backward_func`), the last pipeline stage turns the
vocab-parallel logits into per-token log-probabilities (Megatron's vocab-parallel cross entropy
over logits masked to the allowed ids), and one all-reduce gives every rank all the scores.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from tqdm import tqdm

from megatron_slm.eval.scoring import (EncodedSeq, Restrict, allowed_mask, check_restriction, collate,
                                       make_batches, masked_logprobs)


def _pad_id(vocab) -> int:
    return int(vocab.pad if vocab.pad is not None else vocab.eod)


class HFBackend:
    """A transformers AutoModelForCausalLM (e.g. a model exported by tools/convert_checkpoint.py)."""

    def __init__(self, model: torch.nn.Module, vocab, restrict: Restrict = None, max_tokens: int = 16384,
                 max_batch: int = 64, progress: bool = False, compat: str = "none"):
        self.model = model.eval()
        self.vocab, self.restrict = vocab, restrict
        self.max_tokens, self.max_batch, self.progress = max_tokens, max_batch, progress
        rows = model.get_output_embeddings().weight.shape[0]
        if rows < vocab.vocab_size:
            raise ValueError(f"the HF model has {rows} output rows but the vocabulary has {vocab.vocab_size} "
                             "ids (speech units missing: was it exported with the extended vocabulary?)")
        self.allowed = allowed_mask(vocab, rows, restrict, compat)
        self.max_positions = getattr(model.config, "max_position_embeddings", None)

    @classmethod
    def from_pretrained(cls, hf_dir: str, vocab, device: str = "cpu", dtype: str = "fp32", **kw) -> "HFBackend":
        from transformers import AutoModelForCausalLM

        torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
        model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch_dtype, local_files_only=True)
        return cls(model.to(device), vocab, **kw)

    @torch.no_grad()
    def score(self, seqs: Sequence[EncodedSeq]) -> np.ndarray:
        check_restriction(seqs, self.allowed, self.restrict)
        device = next(self.model.parameters()).device
        out = np.zeros((len(seqs), 2), dtype=np.float64)
        batches = make_batches([len(s.tokens) for s in seqs], self.max_tokens, self.max_batch)
        for idx in tqdm(batches, desc="scoring", unit="batch", disable=not self.progress):
            tokens, targets, mask = collate(seqs, idx, _pad_id(self.vocab))
            lengths = torch.tensor([len(seqs[i].tokens) for i in idx])
            attn = (torch.arange(tokens.shape[1])[None, :] < lengths[:, None]).long()
            logits = self.model(input_ids=tokens.to(device), attention_mask=attn.to(device)).logits
            lp = masked_logprobs(logits, targets.to(device), self.allowed).double().cpu()
            m = mask.double()
            out[idx, 0] = (lp.masked_fill(m == 0, 0.0) * m).sum(1).numpy()
            out[idx, 1] = m.sum(1).numpy()
        return out


def _vocab_parallel_logprobs(logits_bsv: torch.Tensor, targets: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """log p(target) [b, s] from this TP rank's vocabulary slice, the softmax spanning all ranks."""
    from megatron.core import parallel_state as ps
    from megatron.core import tensor_parallel

    v_local = logits_bsv.shape[-1]
    start = ps.get_tensor_model_parallel_rank() * v_local
    allow = allowed[start:start + v_local]
    if allow.shape[0] < v_local:  # padding rows past the real vocabulary: never allowed
        allow = torch.cat([allow, torch.zeros(v_local - allow.shape[0], dtype=torch.bool)])
    allow = allow.to(logits_bsv.device)
    x = logits_bsv.float().masked_fill(~allow, float("-inf")).transpose(0, 1).contiguous()  # [s, b, v]
    loss = tensor_parallel.vocab_parallel_cross_entropy(x, targets.transpose(0, 1).contiguous())
    return -loss.transpose(0, 1)


class MegatronBackend:
    """Megatron GPTModel chunks of this rank (as built by models.provider.build_gpt_models).

    Every rank of the job must call `score` with the same sequences (collective)."""

    def __init__(self, models: list, vocab, padded_vocab_size: Optional[int] = None, restrict: Restrict = None,
                 max_tokens: int = 16384, max_batch: int = 64, progress: bool = False, compat: str = "none"):
        self.models = models
        self.vocab, self.restrict = vocab, restrict
        self.max_tokens, self.max_batch, self.progress = max_tokens, max_batch, progress
        self.allowed = allowed_mask(vocab, padded_vocab_size or vocab.vocab_size, restrict, compat)
        self.max_positions = getattr(getattr(models[0], "module", models[0]), "max_sequence_length", None)

    def _device(self) -> torch.device:
        return next(self.models[0].parameters()).device

    @torch.no_grad()
    def score(self, seqs: Sequence[EncodedSeq]) -> np.ndarray:
        import torch.distributed as dist
        from megatron.core import parallel_state as ps
        from megatron.core.pipeline_parallel import get_forward_backward_func

        check_restriction(seqs, self.allowed, self.restrict)
        device = self._device()
        on_cpu = device.type == "cpu"
        pp = ps.get_pipeline_model_parallel_world_size()
        # The interleaved (virtual pipeline) schedule wants the microbatch count to be a multiple
        # of PP; split each batch into that many equal microbatches.
        n_micro = pp if len(self.models) > 1 else 1
        result = torch.zeros((len(seqs), 2), dtype=torch.float64)
        batches = make_batches([len(s.tokens) for s in seqs], self.max_tokens, self.max_batch)
        mine = batches[ps.get_data_parallel_rank()::ps.get_data_parallel_world_size()]
        write = ps.is_pipeline_last_stage(ignore_virtual=True) and ps.get_tensor_model_parallel_rank() == 0
        was_training = [m.training for m in self.models]
        for m in self.models:
            m.eval()
        fwd_bwd = get_forward_backward_func()
        pad = _pad_id(self.vocab)
        try:
            for idx in tqdm(mine, desc="scoring", unit="batch", disable=not (self.progress and write)):
                mbs = -(-len(idx) // n_micro)
                rows = list(idx) + [-1] * (mbs * n_micro - len(idx))  # -1: a dummy all-padding row
                L = max(len(seqs[i].tokens) for i in idx)
                micro = [self._microbatch(seqs, rows[k * mbs:(k + 1) * mbs], L, pad, device, on_cpu)
                         for k in range(n_micro)]
                collected: list[tuple[list[int], torch.Tensor, torch.Tensor]] = []

                def step(data_iterator, model, _collected=collected):
                    rows_k, tokens, pos, mask4, targets, smask = next(data_iterator)
                    out = model(tokens, pos, mask4)

                    def loss_func(logits):
                        lp = _vocab_parallel_logprobs(logits, targets, self.allowed).double()
                        m = smask.double()
                        _collected.append((rows_k, (lp.masked_fill(m == 0, 0.0) * m).sum(1).cpu(), m.sum(1).cpu()))
                        return torch.zeros((), device=logits.device), {}

                    return out, loss_func

                data = iter(micro) if len(self.models) == 1 else [iter(micro) for _ in self.models]
                fwd_bwd(forward_step_func=step, data_iterator=data, model=self.models, num_microbatches=n_micro,
                        seq_length=L, micro_batch_size=mbs, forward_only=True)
                if write:
                    for rows_k, sums, counts in collected:
                        for r, i in enumerate(rows_k):
                            if i >= 0:
                                result[i, 0], result[i, 1] = sums[r], counts[r]
        finally:
            for m, t in zip(self.models, was_training):
                m.train(t)
        if dist.is_initialized() and dist.get_world_size() > 1:
            buf = result.to(device) if dist.get_backend() == "nccl" else result
            dist.all_reduce(buf)  # exactly one rank wrote each row
            result = buf.cpu()
        return result.numpy()

    @staticmethod
    def _microbatch(seqs, rows: list[int], L: int, pad: int, device, on_cpu: bool):
        real = [i for i in rows if i >= 0]
        tokens, targets, smask = collate(seqs, real, pad, length=L)
        n_dummy = len(rows) - len(real)
        if n_dummy:
            tokens = torch.cat([tokens, torch.full((n_dummy, L), pad, dtype=torch.long)])
            targets = torch.cat([targets, torch.full((n_dummy, L), pad, dtype=torch.long)])
            smask = torch.cat([smask, torch.zeros((n_dummy, L))])
        b = len(rows)
        pos = torch.arange(L, dtype=torch.long).unsqueeze(0).expand(b, L).contiguous()
        # The local (CPU) attention needs an explicit causal mask (True = masked); TE/flash on
        # GPU applies the causal mask itself.
        mask4 = torch.triu(torch.ones(L, L, dtype=torch.bool), 1).expand(b, 1, L, L).contiguous() if on_cpu else None
        mv = lambda t: t.to(device) if t is not None else None  # noqa: E731
        return rows, mv(tokens), mv(pos), mv(mask4), mv(targets), mv(smask)
