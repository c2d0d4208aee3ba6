"""Per-GPU memory estimate of a training layout: where the bytes go, before GPUs are booked.

    est = estimate_memory(cfg, arch, padded_vocab, world_size=8)
    est.peak_gib, est.peak_stage, est.stages[0].activation_bytes

Every pipeline stage is estimated; the peak is what a GPU must hold. The accounting (model
states, activations per layer, pipelining, what `overhead_gib` covers) is in docs/memory.md.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from megatron_slm.config import SLMConfig
from megatron_slm.models.flops import param_counts
from megatron_slm.models.arch import ModelArch

GIB = 2**30
DEFAULT_OVERHEAD_GIB = 2.0
FIT_FRACTION = 0.85
# Usable memory of the accelerators the recipes target (GiB as `torch.cuda.mem_get_info` reports).
GPU_MEMORY_GIB = {"A100-80GB": 79.2, "A100-40GB": 39.4, "H100-80GB": 79.1, "H200": 139.8}


@dataclass(frozen=True)
class Layout:
    """The knobs of a run that decide memory (everything else comes from the architecture)."""
    tp: int = 1
    pp: int = 1
    dp: int = 1
    vpp: Optional[int] = None
    sequence_parallel: bool = False
    distributed_optimizer: bool = False
    recompute: str = "none"  # none | selective | full
    micro_batch_size: int = 1
    seq_length: int = 2048
    num_microbatches: int = 1
    dtype: str = "bf16"  # fp32 | bf16 | fp16
    fp8: bool = False
    flash_attention: bool = True  # False: the s x s attention probabilities are stored

    @classmethod
    def from_config(cls, cfg: SLMConfig, world_size: int) -> "Layout":
        p, t = cfg.parallel, cfg.train
        dp = world_size // (p.tp * p.pp)
        # The local spec (CPU, no TE) and the unfused backends materialise the probabilities.
        flash = cfg.model.spec != "local" and cfg.model.attention_backend in ("auto", "flash", "fused")
        return cls(tp=p.tp, pp=p.pp, dp=dp, vpp=p.vpp, sequence_parallel=p.sequence_parallel,
                   distributed_optimizer=p.distributed_optimizer, recompute=cfg.model.recompute,
                   micro_batch_size=t.micro_batch_size, seq_length=t.seq_length,
                   num_microbatches=max(1, t.global_batch_size // (t.micro_batch_size * max(dp, 1))),
                   dtype=cfg.precision.dtype, fp8=cfg.precision.fp8 is not None, flash_attention=flash)


@dataclass
class StageMemory:
    stage: int
    layers: int
    params: int  # parameters this rank holds
    weight_bytes: float
    grad_bytes: float
    optimizer_bytes: float
    activation_bytes: float  # decoder layers, all microbatches in flight
    logits_bytes: float  # last stage only
    overhead_bytes: float

    @property
    def total_bytes(self) -> float:
        return (self.weight_bytes + self.grad_bytes + self.optimizer_bytes + self.activation_bytes
                + self.logits_bytes + self.overhead_bytes)

    @property
    def total_gib(self) -> float:
        return self.total_bytes / GIB


@dataclass
class MemoryEstimate:
    layout: Layout
    stages: list[StageMemory] = field(default_factory=list)

    @property
    def peak(self) -> StageMemory:
        return max(self.stages, key=lambda s: s.total_bytes)

    @property
    def peak_gib(self) -> float:
        return self.peak.total_gib

    @property
    def peak_stage(self) -> int:
        return self.peak.stage

    def fits(self, gpu_gib: float, fraction: float = FIT_FRACTION) -> bool:
        return self.peak_gib <= fraction * gpu_gib


def _bytes_per_element(dtype: str) -> int:
    return 4 if dtype == "fp32" else 2


def layer_param_split(arch: ModelArch) -> tuple[int, int]:
    """(TP-sharded parameters, replicated parameters) of one decoder layer."""
    counts = param_counts(arch)
    per_layer = (counts.non_embedding - arch.hidden_size) // arch.num_layers  # minus the final norm
    replicated = 2 * arch.hidden_size  # the two RMSNorm weights
    return per_layer - replicated, replicated


def stage_params(arch: ModelArch, padded_vocab: int, layout: Layout, stage: int) -> int:
    sharded, replicated = layer_param_split(arch)
    layers = arch.num_layers // layout.pp
    params = layers * (sharded // layout.tp + replicated)
    first, last = stage == 0, stage == layout.pp - 1
    embedding = padded_vocab * arch.hidden_size // layout.tp
    if first:
        params += embedding
    if last:
        params += arch.hidden_size  # final norm
        if not arch.tie_embeddings or not first:  # own output layer (or the tied copy, PP > 1)
            params += embedding
    return params


def layer_activation_bytes(arch: ModelArch, layout: Layout) -> float:
    """Bytes one decoder layer keeps for backward, for one microbatch, without recomputation."""
    t = layout.tp
    t_sp = t if layout.sequence_parallel else 1
    h, f, d = arch.hidden_size, arch.ffn_hidden_size, arch.head_dim
    nh, ng, s = arch.num_attention_heads, arch.num_query_groups, layout.seq_length
    act = _bytes_per_element(layout.dtype)
    lin = 1 if layout.fp8 else act  # FP8 GEMM inputs are kept in FP8
    per_token = (2 * h / t_sp * act              # RMSNorm inputs
                 + 2 * h / t_sp * lin            # QKV and FC1 inputs
                 + (nh + 2 * ng) * d / t * act   # q, k, v
                 + nh * d / t * lin              # attention output
                 + 2 * f / t * act               # FC1 output
                 + f / t * lin)                  # SwiGLU output
    if not layout.flash_attention and layout.recompute == "none":
        per_token += nh * s / t * act            # softmax probabilities
    return per_token * s * layout.micro_batch_size


def held_layer_microbatches(arch: ModelArch, layout: Layout, stage: int) -> int:
    """How many (layer, microbatch) activation sets `stage` holds at the 1F1B peak."""
    layers = arch.num_layers // layout.pp
    if layout.pp == 1:
        return layers  # one microbatch at a time: forward then backward
    m = layout.num_microbatches
    if layout.vpp:
        v = layout.vpp
        chunk_microbatches = min(2 * (layout.pp - stage - 1) + (v - 1) * layout.pp + 1, m * v)
        return chunk_microbatches * layers // v
    return min(layout.pp - stage, m) * layers


def stage_activation_bytes(arch: ModelArch, layout: Layout, stage: int) -> float:
    held = held_layer_microbatches(arch, layout, stage)
    full = layer_activation_bytes(arch, layout)
    if layout.recompute == "full":
        t_sp = layout.tp if layout.sequence_parallel else 1
        layer_input = (arch.hidden_size / t_sp * layout.seq_length * layout.micro_batch_size
                       * _bytes_per_element(layout.dtype))
        return held * layer_input + full  # + one layer rebuilt during its backward
    return held * full


def logits_bytes(arch: ModelArch, padded_vocab: int, layout: Layout) -> float:
    tokens = layout.seq_length * layout.micro_batch_size
    t_sp = layout.tp if layout.sequence_parallel else 1
    act = _bytes_per_element(layout.dtype)
    logits = tokens * padded_vocab / layout.tp * (act + 4)  # output + fp32 copy in the loss
    return logits + 2 * tokens * arch.hidden_size / t_sp * act


def estimate_memory(arch: ModelArch, padded_vocab: int, layout: Layout,
                    overhead_gib: float = DEFAULT_OVERHEAD_GIB) -> MemoryEstimate:
    if arch.num_layers % layout.pp:
        raise ValueError(f"num_layers={arch.num_layers} is not divisible by pp={layout.pp}")
    weight_b = _bytes_per_element(layout.dtype) + (1 if layout.fp8 else 0)
    grad_b = 4
    optim_b = 8 if layout.dtype == "fp32" else 12
    optim_share = layout.dp if layout.distributed_optimizer else 1
    est = MemoryEstimate(layout)
    for stage in range(layout.pp):
        n = stage_params(arch, padded_vocab, layout, stage)
        est.stages.append(StageMemory(
            stage=stage, layers=arch.num_layers // layout.pp, params=n,
            weight_bytes=n * weight_b, grad_bytes=n * grad_b, optimizer_bytes=n * optim_b / optim_share,
            activation_bytes=stage_activation_bytes(arch, layout, stage),
            logits_bytes=logits_bytes(arch, padded_vocab, layout) if stage == layout.pp - 1 else 0.0,
            overhead_bytes=overhead_gib * GIB))
    return est


def estimate_for_config(cfg: SLMConfig, arch: ModelArch, padded_vocab: int, world_size: int,
                        overhead_gib: float = DEFAULT_OVERHEAD_GIB) -> MemoryEstimate:
    return estimate_memory(arch, padded_vocab, Layout.from_config(cfg, world_size), overhead_gib)


def config_arch(cfg: SLMConfig, preset: Optional[str] = None) -> tuple[ModelArch, int]:
    """The architecture and padded vocabulary a config trains.

    From `model.from` / the checkpoint's slm_model.json when it exists; before the base model is
    converted, from `preset` with the speech vocabulary the converter will add (what the
    scaling planner assumes too)."""
    from pathlib import Path

    from megatron_slm.config import ConfigError
    from megatron_slm.models.arch import padded_vocab_size
    from megatron_slm.models.presets import PRESETS, trained_arch
    from megatron_slm.models.record import has_model_record
    from megatron_slm.models.provider import arch_source_dir, resolve_arch, resolve_padded_vocab

    source = arch_source_dir(cfg)
    if preset is not None and not has_model_record(source):
        if preset not in PRESETS:
            raise ConfigError(f"--preset {preset!r} is not a known preset ({', '.join(sorted(PRESETS))})")
        arch = trained_arch(preset, cfg)
        return arch, padded_vocab_size(arch.vocab_size, cfg.model.make_vocab_size_divisible_by, cfg.parallel.tp)
    arch, pinned = resolve_arch(cfg)
    return arch, resolve_padded_vocab(arch, cfg, pinned)
