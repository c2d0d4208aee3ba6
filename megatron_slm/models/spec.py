"""`ModelSpec`: everything that decides which `GPTModel` a rank builds, and nothing else.

Architecture, padded vocabulary, parallel layout, precision and layer spec. The run plan makes
one from the whole run config (`ModelSpec.from_config`); conversion, verification, evaluation
and generation make one for inference (`ModelSpec.for_inference`) without a run config.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from megatron_slm.config import PrecisionConfig, SLMConfig
from megatron_slm.models.arch import ModelArch

LayerSpec = Literal["auto", "te", "local"]


@dataclass(frozen=True)
class ParallelLayout:
    tp: int = 1
    pp: int = 1
    vpp: Optional[int] = None  # virtual pipeline stages per rank (interleaved 1F1B)
    sequence_parallel: bool = False


@dataclass(frozen=True)
class ModelSpec:
    arch: ModelArch
    padded_vocab_size: int  # embedding rows: vocab_size padded to a multiple of (divisible_by x TP)
    layout: ParallelLayout = ParallelLayout()
    precision: PrecisionConfig = field(default_factory=lambda: PrecisionConfig(dtype="fp32"))
    layer_spec: LayerSpec = "auto"  # Transformer Engine on CUDA when installed, the local spec otherwise
    init_method_std: float = 0.02
    recompute: Literal["none", "selective", "full"] = "none"
    attention_backend: str = "auto"  # TE spec only

    @classmethod
    def from_config(cls, cfg: SLMConfig, arch: ModelArch, padded_vocab_size: int) -> "ModelSpec":
        p, m = cfg.parallel, cfg.model
        return cls(arch=arch, padded_vocab_size=padded_vocab_size,
                   layout=ParallelLayout(p.tp, p.pp, p.vpp, p.sequence_parallel), precision=cfg.precision,
                   layer_spec=m.spec, init_method_std=m.init_method_std, recompute=m.recompute,
                   attention_backend=m.attention_backend)

    @classmethod
    def for_inference(cls, arch: ModelArch, padded_vocab_size: int, tp: int = 1, pp: int = 1,
                      dtype: str = "fp32", layer_spec: LayerSpec = "auto") -> "ModelSpec":
        return cls(arch=arch, padded_vocab_size=padded_vocab_size, layout=ParallelLayout(tp, pp),
                   precision=PrecisionConfig(dtype=dtype), layer_spec=layer_spec)


def layout_problem(arch: ModelArch, tp: int, pp: int) -> Optional[str]:
    """Why the model cannot split over TP (heads, query groups, MLP) and PP (layers), or None.

    The vocabulary is never the obstacle: a loader re-pads it for any TP."""
    for what, n, flag, by in (("num_attention_heads", arch.num_attention_heads, "--tp", tp),
                              ("num_key_value_heads (query groups)", arch.num_query_groups, "--tp", tp),
                              ("intermediate_size", arch.ffn_hidden_size, "--tp", tp),
                              ("num_hidden_layers", arch.num_layers, "--pp", pp)):
        if by < 1 or n % by:
            return f"{what}={n} does not divide by {flag} {by}"
    return None
