"""`ModelSpec` -> Megatron-Core `GPTModel`s for this rank; a run config -> its architecture.

One function builds the model for training, conversion, verification, evaluation and
generation, so every path runs the same module. Llama-family decoders: RMSNorm, SwiGLU, GQA,
RoPE (optionally with Llama-3 frequency scaling), optional q/k/v bias (Qwen2), optional per-head
q/k RMSNorm and a head dim other than hidden/heads (Qwen3), tied or untied embeddings.

Layer spec: Transformer Engine when it imports and the run is on CUDA (required for FP8 and
sequence parallelism), Megatron's local spec otherwise (the CPU path).
"""
from __future__ import annotations

import importlib.util
from typing import Optional

import torch
import torch.nn.functional as F

from megatron_slm.config import ConfigError, SLMConfig
from megatron_slm.models.arch import ModelArch, padded_vocab_for_layout
from megatron_slm.models.presets import get_preset
from megatron_slm.models.record import has_model_record, read_model_record
from megatron_slm.models.spec import ModelSpec

_ARCH_OVERRIDES = ("num_layers", "hidden_size", "ffn_hidden_size", "num_attention_heads",
                   "num_query_groups", "kv_channels", "vocab_size", "max_position_embeddings",
                   "rotary_base", "rope_scaling", "tie_embeddings")


def te_available() -> bool:
    return importlib.util.find_spec("transformer_engine") is not None


def arch_source_dir(cfg: SLMConfig) -> Optional[str]:
    """Where the architecture comes from when no preset is named: `model.from`, else a
    checkpoint being loaded or resumed that records one."""
    if cfg.model.from_:
        return cfg.model.from_
    if cfg.model.preset is None:
        for candidate in (cfg.checkpoint.save, cfg.checkpoint.load):
            if has_model_record(candidate):
                return candidate
    return None


def resolve_arch(cfg: SLMConfig, vocab_size: Optional[int] = None) -> tuple[ModelArch, Optional[int]]:
    """The architecture of this run and the padded vocabulary a checkpoint pins (if any)."""
    pinned_padding = None
    source = arch_source_dir(cfg)
    if source is not None:
        record = read_model_record(source)
        arch, pinned_padding = record.arch, record.padded_vocab_size
    elif cfg.model.preset is not None:
        try:
            arch = get_preset(cfg.model.preset)
        except KeyError as e:
            raise ConfigError(f"model.preset: {e.args[0]}") from None
    else:
        raise ConfigError("model: set model.preset or model.from (or load a checkpoint that records its architecture)")
    changes = {k: getattr(cfg.model, k) for k in _ARCH_OVERRIDES if getattr(cfg.model, k) is not None}
    if vocab_size is not None and "vocab_size" not in changes and source is None:
        changes["vocab_size"] = vocab_size  # a preset takes the tokenizer's size
    arch = arch.replace(**changes)
    if vocab_size is not None and arch.vocab_size < vocab_size:
        raise ConfigError(f"model vocab_size={arch.vocab_size} is smaller than the tokenizer's {vocab_size} "
                          f"(data.tokenizer={cfg.data.tokenizer!r}, data.num_units={cfg.data.num_units})")
    return arch, pinned_padding


def resolve_padded_vocab(arch: ModelArch, cfg: SLMConfig, existing: Optional[int] = None) -> int:
    """Pad to make_vocab_size_divisible_by x TP; a checkpoint's padding is kept when it is such a
    multiple, else the weights are re-padded on load (see `padded_vocab_for_layout`)."""
    return padded_vocab_for_layout(arch.vocab_size, cfg.model.make_vocab_size_divisible_by, cfg.parallel.tp, existing)


def _fused_softmax_built() -> bool:
    return all(importlib.util.find_spec(m) is not None
               for m in ("scaled_masked_softmax_cuda", "scaled_upper_triang_masked_softmax_cuda"))


def use_te_spec(layer_spec: str, on_cuda: bool) -> bool:
    """`layer_spec` "te" | "local" | "auto" (TE when on CUDA and installed)."""
    if layer_spec == "te":
        return True
    if layer_spec == "local":
        return False
    return on_cuda and te_available()


TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def build_transformer_config(spec: ModelSpec, on_cuda: bool):
    from megatron.core.transformer import TransformerConfig

    arch, p, prec = spec.arch, spec.layout, spec.precision
    dtype = TORCH_DTYPES[prec.dtype]
    te_spec = use_te_spec(spec.layer_spec, on_cuda)
    kwargs = dict(
        num_layers=arch.num_layers, hidden_size=arch.hidden_size, ffn_hidden_size=arch.ffn_hidden_size,
        num_attention_heads=arch.num_attention_heads, num_query_groups=arch.num_query_groups,
        kv_channels=arch.head_dim, normalization="RMSNorm", layernorm_epsilon=arch.norm_epsilon,
        gated_linear_unit=True, activation_func=F.silu, add_bias_linear=False, add_qkv_bias=arch.qkv_bias,
        qk_layernorm=arch.qk_norm,
        hidden_dropout=0.0, attention_dropout=0.0, init_method_std=spec.init_method_std,
        tensor_model_parallel_size=p.tp, pipeline_model_parallel_size=p.pp,
        virtual_pipeline_model_parallel_size=p.vpp, sequence_parallel=p.sequence_parallel,
        params_dtype=dtype, bf16=dtype == torch.bfloat16, fp16=dtype == torch.float16,
        pipeline_dtype=dtype, autocast_dtype=dtype,
        # Per-token loss averaging across microbatches and DP ranks (finalize_model_grads divides).
        calculate_per_token_loss=True,
        # CPU initialisation draws the full weight from the (identically seeded) CPU RNG and
        # slices it, so TP ranks agree and DP replicas are identical.
        use_cpu_initialization=not on_cuda,
        # Fused kernels are CUDA-only. The local spec (CUDA without TE) has neither: its torch
        # RMSNorm asserts persist_layer_norm is off, and its fused softmax needs the compiled
        # scaled_masked_softmax_cuda extension (an Apex build), imported only at the first forward.
        bias_activation_fusion=on_cuda, persist_layer_norm=on_cuda and te_spec,
        masked_softmax_fusion=on_cuda and (te_spec or _fused_softmax_built()),
        bias_dropout_fusion=on_cuda, apply_rope_fusion=False, gradient_accumulation_fusion=False,
        cross_entropy_loss_fusion=False,
    )
    if spec.recompute != "none":
        kwargs.update(recompute_granularity=spec.recompute)
        if spec.recompute == "full":
            kwargs.update(recompute_method="uniform", recompute_num_layers=1)
    if prec.fp8:
        kwargs.update(fp8=prec.fp8, fp8_recipe=prec.fp8_recipe, fp8_amax_history_len=prec.fp8_amax_history_len,
                      fp8_amax_compute_algo=prec.fp8_amax_compute_algo, fp8_param=prec.fp8_param)
    if on_cuda and spec.attention_backend != "auto":
        from megatron.core.transformer.enums import AttnBackend

        kwargs["attention_backend"] = AttnBackend[spec.attention_backend]
    return TransformerConfig(**kwargs)


def layer_spec(spec: ModelSpec, on_cuda: bool):
    from megatron.core.models.gpt import gpt_layer_specs as specs

    if use_te_spec(spec.layer_spec, on_cuda):
        return specs.get_gpt_layer_with_transformer_engine_spec(fp8=spec.precision.fp8, qk_layernorm=spec.arch.qk_norm)
    return specs.get_gpt_layer_local_spec(normalization="RMSNorm", qk_layernorm=spec.arch.qk_norm)


def build_gpt_models(spec: ModelSpec, on_cuda: bool = False) -> list:
    """The GPTModel chunks this rank holds (one, or vpp with interleaved pipelining)."""
    from megatron.core import parallel_state as ps
    from megatron.core.models.gpt import GPTModel

    arch = spec.arch
    config = build_transformer_config(spec, on_cuda)
    layers = layer_spec(spec, on_cuda)
    vpp = spec.layout.vpp
    models = []
    for stage in range(vpp or 1):
        vp_stage = stage if vpp else None
        model = GPTModel(
            config=config, transformer_layer_spec=layers, vocab_size=spec.padded_vocab_size,
            max_sequence_length=arch.max_position_embeddings,
            pre_process=ps.is_pipeline_first_stage(ignore_virtual=False, vp_stage=vp_stage),
            post_process=ps.is_pipeline_last_stage(ignore_virtual=False, vp_stage=vp_stage),
            share_embeddings_and_output_weights=arch.tie_embeddings, position_embedding_type="rope",
            rotary_base=int(arch.rotary_base), rope_scaling=arch.rope_scaling,
            rope_scaling_factor=arch.rope_scaling_factor, vp_stage=vp_stage)
        if config.params_dtype != torch.float32:
            # The local spec builds its torch norms in float32 whatever params_dtype says. One
            # dtype for every parameter, as Megatron-LM's Float16Module casts it: the float16
            # optimizer maps optimizer state to checkpoint keys through its float16 params only,
            # so a float32 norm among bf16 weights made the default bf16 run unsavable.
            model.to(dtype=config.params_dtype)
        if on_cuda:
            model.cuda(torch.cuda.current_device())
        models.append(model)
    return models
