"""Check a Megatron checkpoint against an HF model: same tokens in, logits compared.

Runs the real Megatron `GPTModel` (the trainer's provider, local spec, fp32) in the requested
TP/PP layout -- every rank of a `torchrun --nproc_per_node=TP*PP` job calls `verify` -- and
the HF model (transformers, fp32) on the last pipeline stage. Compared columns: all ids when
the HF tokenizer already has the speech units (an exported model), else only the text ids
[0, V) -- the new rows of a fresh conversion have no HF counterpart.

The tolerance on the max |logit diff| scales with what fp32 round-off can reach. The two models
compute the same function with different kernels and summation orders; each of the L residual
layers adds a relative error of a few fp32 epsilons of the activations, and the logits carry
it at their own magnitude. The default is therefore

    tolerance = max(1e-4, 8 * eps_fp32 * L * max|HF logit|)      (eps_fp32 = 1.19e-7)

1e-4 for tiny test models, 8.0e-4 for SmolLM2-135M (30 layers, logits up to 28; a correct
conversion differs by 1.3e-4 there). A mapping error (a swapped or transposed tensor, a wrong
RoPE or norm) moves logits by 1e-2 and more, far above it. Beside the max difference the
result reports the top-1 agreement and the mean KL(HF || Megatron) over the compared ids.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from megatron_slm.convert.families import ConversionError


FP32_EPS = float(torch.finfo(torch.float32).eps)


def scaled_tolerance(num_layers: int, max_abs_logit: float) -> float:
    """The default tolerance (module doc): fp32 round-off grown over the depth, at the logits' scale."""
    return max(1e-4, 8 * FP32_EPS * num_layers * max_abs_logit)


@dataclass
class VerifyResult:
    max_abs_diff: float
    mean_abs_diff: float
    compared_vocab: int
    tokens: int
    tolerance: float
    top1_agreement: float = 1.0  # fraction of positions where both models rank the same id first
    mean_kl: float = 0.0  # mean over positions of KL(HF || Megatron), nats
    max_abs_logit: float = 0.0  # of the HF logits
    scaled: bool = False  # tolerance from `scaled_tolerance` (not given explicitly)

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.tolerance

    def line(self) -> str:
        verdict = "OK" if self.ok else "FAIL"
        how = f" = max(1e-4, 8 eps L max|logit| {self.max_abs_logit:.3g})" if self.scaled else ""
        return (f"{verdict}: max |logit diff| = {self.max_abs_diff:.3e}, mean = {self.mean_abs_diff:.3e}, "
                f"top-1 agreement {self.top1_agreement:.2%}, mean KL {self.mean_kl:.2e} "
                f"over {self.tokens} tokens x {self.compared_vocab} ids (tolerance {self.tolerance:.3g}{how})")


def _compared_vocab(hf_dir: Path, model_vocab: int) -> int:
    import json

    from transformers import AutoTokenizer

    from megatron_slm.vocab import unit_token

    tok = AutoTokenizer.from_pretrained(str(hf_dir), local_files_only=True)
    hf_rows = json.loads((hf_dir / "config.json").read_text())["vocab_size"]
    n = model_vocab if unit_token(0) in tok.get_vocab() else len(tok)
    return min(n, hf_rows, model_vocab)


def _megatron_logits(models: list, tokens: torch.Tensor) -> Optional[torch.Tensor]:
    """Full-vocabulary logits [b, s, padded] on the last pipeline stage, None elsewhere."""
    from megatron.core import parallel_state as ps
    from megatron.core.pipeline_parallel import get_forward_backward_func
    from megatron.core.tensor_parallel import gather_from_tensor_model_parallel_region

    b, s = tokens.shape
    position_ids = torch.arange(s).unsqueeze(0).expand(b, s)
    mask = torch.triu(torch.ones(1, 1, s, s, dtype=torch.bool), diagonal=1)  # True = masked
    captured: list[torch.Tensor] = []

    def loss_func(output: torch.Tensor):
        captured.append(gather_from_tensor_model_parallel_region(output.detach()))
        return output.sum() * 0.0, torch.tensor(1), {}

    def forward_step(data_iterator, model):
        return model(tokens, position_ids, mask), loss_func

    with torch.no_grad():
        get_forward_backward_func()(forward_step_func=forward_step, data_iterator=iter([None]), model=models,
                                    num_microbatches=1, seq_length=s, micro_batch_size=b, forward_only=True)
    return captured[0] if ps.is_pipeline_last_stage() else None


def compare(hf_dir: str | Path, mcore_dir: str | Path, iteration: Optional[int] = None, batch_size: int = 2,
            seq_length: int = 32, seed: int = 0, tolerance: Optional[float] = None) -> VerifyResult:
    """The comparison itself, in already initialised process groups (any TP/PP). `tolerance`
    None: scaled to the model's depth and logits (module doc)."""
    import torch.distributed as dist
    from megatron.core import parallel_state as ps

    from megatron_slm.checkpoint.inference import load_for_inference
    from megatron_slm.config import ConfigError
    from megatron_slm.convert.mcore_to_hf import resolve_checkpoint
    from megatron_slm.convert.streaming import CPU_RUNTIME

    hf_dir, mcore_dir = Path(hf_dir), Path(mcore_dir)
    tp, pp = ps.get_tensor_model_parallel_world_size(), ps.get_pipeline_model_parallel_world_size()
    arch, _, iteration, _ = resolve_checkpoint(mcore_dir, iteration)
    if not (hf_dir / "config.json").is_file():
        raise ConversionError(f"{hf_dir}: no config.json (not a Hugging Face model directory)")
    n_vocab = _compared_vocab(hf_dir, arch.vocab_size)
    try:
        models = load_for_inference(mcore_dir, tp, pp, iteration, dtype="fp32", runtime=CPU_RUNTIME).models
    except ConfigError as e:
        raise ConversionError(str(e)) from None
    gen = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, n_vocab, (batch_size, seq_length), generator=gen)
    logits = _megatron_logits(models, tokens)
    stats = torch.zeros(5, dtype=torch.float64)
    if logits is not None and ps.get_tensor_model_parallel_rank() == 0:
        from transformers import AutoModelForCausalLM
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # one verdict line, no loading bar
        hf = AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32).eval()
        with torch.no_grad():
            ref = hf(input_ids=tokens).logits[..., :n_vocab].double()
        ours = logits[..., :n_vocab].double()
        diff = (ours - ref).abs()
        log_p, log_q = torch.log_softmax(ref, -1), torch.log_softmax(ours, -1)
        kl = (log_p.exp() * (log_p - log_q)).sum(-1)
        top1 = (ours.argmax(-1) == ref.argmax(-1)).double()
        stats = torch.tensor([diff.max().item(), diff.mean().item(), top1.mean().item(), kl.mean().item(),
                              ref.abs().max().item()], dtype=torch.float64)
    dist.all_reduce(stats)  # exactly one rank contributes
    max_diff, mean_diff, top1, kl, max_logit = stats.tolist()
    scaled = tolerance is None
    if scaled:
        tolerance = scaled_tolerance(arch.num_layers, max_logit)
    return VerifyResult(max_diff, mean_diff, n_vocab, batch_size * seq_length, tolerance, top1, kl, max_logit, scaled)


def verify(hf_dir: str | Path, mcore_dir: str | Path, iteration: Optional[int] = None, tp: int = 1, pp: int = 1,
           **kwargs) -> VerifyResult:
    """Call on every rank of a TP*PP job (or in a plain process for TP=PP=1)."""
    import torch.distributed as dist

    from megatron_slm.console import quiet_cpu_warnings, quiet_known_warnings

    quiet_known_warnings()  # the console shows the verdict, not Megatron's and torch's fallbacks
    quiet_cpu_warnings()

    from megatron_slm.convert.streaming import CPU_RUNTIME
    from megatron_slm.runtime.distributed import destroy_distributed, init_distributed

    init_distributed(CPU_RUNTIME, tp=tp, pp=pp)
    try:
        if dist.get_world_size() != tp * pp:
            raise ConversionError(f"verify needs exactly TP*PP = {tp * pp} processes, got {dist.get_world_size()}")
        return compare(hf_dir, mcore_dir, iteration, **kwargs)
    finally:
        destroy_distributed()
