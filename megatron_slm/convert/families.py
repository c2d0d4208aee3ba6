"""Supported HF model families: one declarative table each.

A `Family` says which HF `config.json` it accepts (model_type + the settings our Megatron
model cannot express), and how every HF tensor maps to a Megatron parameter of the TP=1/PP=1
model (names below, `{i}` = layer index). The transforms themselves live in `mapping.py`:

    copy      the same tensor
    vocab     an embedding-like matrix whose rows are token ids (extended/padded separately)
    qkv       q, k, v stacked per query group: [q heads of group g; k_g; v_g] for g in groups
    gate_up   [gate; up] (Megatron's SwiGLU linear_fc1)

`arch_from_hf_config` / `hf_config_from_arch` translate between the HF config and `ModelArch`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

from megatron_slm.models.arch import ModelArch

Transform = Literal["copy", "vocab", "qkv", "gate_up"]


class ConversionError(ValueError):
    """A user-facing problem with the input or output of a conversion (one clear line)."""


@dataclass(frozen=True)
class TensorMap:
    mcore: str  # Megatron parameter name in the TP=1/PP=1 model ("{i}" = layer)
    hf: tuple[str, ...]  # HF tensor names, in the order the transform concatenates them
    how: Transform = "copy"
    when: Optional[str] = None  # only when this `ModelArch` flag holds ("qkv_bias", "qk_norm", "untied")

    def applies(self, arch: ModelArch) -> bool:
        if self.when is None:
            return True
        if self.when == "untied":
            return not arch.tie_embeddings
        return bool(getattr(arch, self.when))


@dataclass(frozen=True)
class Family:
    name: str  # ModelArch.family
    model_types: tuple[str, ...]  # HF config "model_type" values
    hf_architecture: str  # HF class written into exported configs
    qkv_bias: bool
    qk_norm: bool
    model_tensors: tuple[TensorMap, ...]  # outside the layers
    layer_tensors: tuple[TensorMap, ...]  # per decoder layer
    # HF config settings our model cannot express: key -> accepted values (absent key = fine)
    required: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    export_extra: tuple[tuple[str, Any], ...] = ()  # extra HF config keys written on export

    def tensors_for_layer(self, arch: ModelArch, i: int) -> list[TensorMap]:
        return [TensorMap(t.mcore.format(i=i), tuple(h.format(i=i) for h in t.hf), t.how, t.when)
                for t in self.layer_tensors if t.applies(arch)]

    def model_level_tensors(self, arch: ModelArch) -> list[TensorMap]:
        return [t for t in self.model_tensors if t.applies(arch)]

    def all_tensors(self, arch: ModelArch) -> list[TensorMap]:
        out = list(self.model_level_tensors(arch))
        for i in range(arch.num_layers):
            out += self.tensors_for_layer(arch, i)
        return out


_L = "model.layers.{i}."
_M = "decoder.layers.{i}."
_MODEL_TENSORS = (
    TensorMap("embedding.word_embeddings.weight", ("model.embed_tokens.weight",), "vocab"),
    TensorMap("decoder.final_layernorm.weight", ("model.norm.weight",)),
    TensorMap("output_layer.weight", ("lm_head.weight",), "vocab", when="untied"),
)
_LAYER_TENSORS = (
    TensorMap(_M + "input_layernorm.weight", (_L + "input_layernorm.weight",)),
    TensorMap(_M + "self_attention.linear_qkv.weight",
              (_L + "self_attn.q_proj.weight", _L + "self_attn.k_proj.weight", _L + "self_attn.v_proj.weight"), "qkv"),
    TensorMap(_M + "self_attention.linear_qkv.bias",
              (_L + "self_attn.q_proj.bias", _L + "self_attn.k_proj.bias", _L + "self_attn.v_proj.bias"), "qkv",
              when="qkv_bias"),
    # Per-head RMSNorm on queries and keys (Qwen3); the TE layer spec names them the same.
    TensorMap(_M + "self_attention.q_layernorm.weight", (_L + "self_attn.q_norm.weight",), when="qk_norm"),
    TensorMap(_M + "self_attention.k_layernorm.weight", (_L + "self_attn.k_norm.weight",), when="qk_norm"),
    TensorMap(_M + "self_attention.linear_proj.weight", (_L + "self_attn.o_proj.weight",)),
    TensorMap(_M + "pre_mlp_layernorm.weight", (_L + "post_attention_layernorm.weight",)),
    TensorMap(_M + "mlp.linear_fc1.weight", (_L + "mlp.gate_proj.weight", _L + "mlp.up_proj.weight"), "gate_up"),
    TensorMap(_M + "mlp.linear_fc2.weight", (_L + "mlp.down_proj.weight",)),
)
_NO_BIAS = (("attention_bias", (False, None)), ("mlp_bias", (False, None)))
_SILU = (("hidden_act", ("silu",)),)

FAMILIES: dict[str, Family] = {
    "llama": Family("llama", ("llama",), "LlamaForCausalLM", qkv_bias=False, qk_norm=False,
                    model_tensors=_MODEL_TENSORS, layer_tensors=_LAYER_TENSORS, required=_SILU + _NO_BIAS),
    "qwen2": Family("qwen2", ("qwen2",), "Qwen2ForCausalLM", qkv_bias=True, qk_norm=False,
                    model_tensors=_MODEL_TENSORS, layer_tensors=_LAYER_TENSORS,
                    required=_SILU + (("use_sliding_window", (False, None)),),
                    export_extra=(("use_sliding_window", False),)),
    "qwen3": Family("qwen3", ("qwen3",), "Qwen3ForCausalLM", qkv_bias=False, qk_norm=True,
                    model_tensors=_MODEL_TENSORS, layer_tensors=_LAYER_TENSORS,
                    required=_SILU + _NO_BIAS[:1] + (("use_sliding_window", (False, None)),),
                    export_extra=(("use_sliding_window", False), ("attention_bias", False))),
    "mistral": Family("mistral", ("mistral",), "MistralForCausalLM", qkv_bias=False, qk_norm=False,
                      model_tensors=_MODEL_TENSORS, layer_tensors=_LAYER_TENSORS, required=_SILU,
                      export_extra=(("sliding_window", None),)),
}

# Llama-3 RoPE scaling constants Megatron hard-codes (only the factor is configurable there).
_LLAMA3_FIXED = {"low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}


def family_of(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ConversionError(f"unknown model family {name!r}; supported: {', '.join(FAMILIES)}") from None


def read_hf_config(hf_dir: str | Path) -> dict:
    path = Path(hf_dir) / "config.json"
    if not path.is_file():
        raise ConversionError(f"{hf_dir}: no config.json (not a Hugging Face model directory)")
    try:
        config = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ConversionError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(config, dict):
        raise ConversionError(f"{path}: expected a JSON object of model settings, found a {type(config).__name__}")
    return config


def detect_family(config: dict, where: str = "config.json") -> Family:
    model_type = config.get("model_type")
    for family in FAMILIES.values():
        if model_type in family.model_types:
            return family
    known = ", ".join(t for f in FAMILIES.values() for t in f.model_types)
    raise ConversionError(f"{where}: model_type={model_type!r} is not a supported family (supported: {known})")


def _rope(config: dict, where: str) -> tuple[float, bool, float]:
    """(rope theta, llama3 scaling on/off, factor) from legacy or transformers>=5 keys."""
    params = config.get("rope_parameters") or {}
    scaling = config.get("rope_scaling") or params
    theta = config.get("rope_theta", params.get("rope_theta", 10000.0))
    kind = scaling.get("rope_type", scaling.get("type", "default")) if scaling else "default"
    if kind in (None, "default"):
        return float(theta), False, 32.0
    if kind != "llama3":
        raise ConversionError(f"{where}: rope_type={kind!r} is not supported (only default and llama3 RoPE)")
    for key, want in _LLAMA3_FIXED.items():
        if key in scaling and float(scaling[key]) != want:
            raise ConversionError(f"{where}: rope scaling {key}={scaling[key]} is not supported "
                                  f"(Megatron's Llama-3 scaling fixes it to {want})")
    return float(theta), True, float(scaling.get("factor", 8.0))


def _get(config: dict, key: str, where: str) -> Any:
    if config.get(key) is None:
        raise ConversionError(f"{where}: missing required field {key!r}")
    return config[key]


def _count(config: dict, key: str, where: str, default: Any = None) -> int:
    """A positive integer setting (a layer/head/width count); 2.5 or "8" is an error, not 2 or 8."""
    value = _get(config, key, where) if default is None else (config.get(key) or default)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConversionError(f"{where}: field {key!r} must be a positive integer, found {value!r}")
    return value


def arch_from_hf_config(config: dict, where: str = "config.json") -> tuple[Family, ModelArch]:
    """HF config -> (family, architecture with the HF embedding's row count as vocab_size)."""
    family = detect_family(config, where)
    for key, accepted in family.required:
        if key in config and config[key] not in accepted:
            raise ConversionError(f"{where}: {key}={config[key]!r} is not supported for {family.name} "
                                  f"(accepted: {', '.join(map(repr, accepted))})")
    if family.name == "mistral":
        window, max_pos = config.get("sliding_window"), config.get("max_position_embeddings", 0)
        if window is not None and window < max_pos:
            raise ConversionError(f"{where}: sliding_window={window} < max_position_embeddings={max_pos}: "
                                  f"sliding-window attention is not supported")
    heads = _count(config, "num_attention_heads", where)
    hidden = _count(config, "hidden_size", where)
    theta, rope_scaling, factor = _rope(config, where)
    arch = ModelArch(
        family=family.name,
        num_layers=_count(config, "num_hidden_layers", where),
        hidden_size=hidden,
        ffn_hidden_size=_count(config, "intermediate_size", where),
        num_attention_heads=heads,
        num_query_groups=_count(config, "num_key_value_heads", where, default=heads),
        vocab_size=_count(config, "vocab_size", where),
        kv_channels=_count(config, "head_dim", where, default=hidden // heads),
        max_position_embeddings=_count(config, "max_position_embeddings", where, default=4096),
        rotary_base=theta,
        rope_scaling=rope_scaling,
        rope_scaling_factor=factor,
        qkv_bias=family.qkv_bias,
        qk_norm=family.qk_norm,
        tie_embeddings=bool(config.get("tie_word_embeddings", False)),
        norm_epsilon=float(config.get("rms_norm_eps", 1e-6)),
    )
    return family, arch


def hf_config_from_arch(arch: ModelArch, dtype: str, bos_token_id: Optional[int],
                        eos_token_id: Optional[int]) -> Any:
    """The transformers config object for an exported model (saved with save_pretrained)."""
    from transformers import AutoConfig

    family = family_of(arch.family)
    kwargs: dict[str, Any] = dict(
        architectures=[family.hf_architecture], hidden_size=arch.hidden_size,
        intermediate_size=arch.ffn_hidden_size, num_hidden_layers=arch.num_layers,
        num_attention_heads=arch.num_attention_heads, num_key_value_heads=arch.num_query_groups,
        head_dim=arch.head_dim, vocab_size=arch.vocab_size,
        max_position_embeddings=arch.max_position_embeddings, rms_norm_eps=arch.norm_epsilon,
        tie_word_embeddings=arch.tie_embeddings, hidden_act="silu", rope_theta=arch.rotary_base,
        bos_token_id=bos_token_id, eos_token_id=eos_token_id, torch_dtype=dtype,
    )
    if arch.rope_scaling:
        kwargs["rope_scaling"] = {"rope_type": "llama3", "factor": arch.rope_scaling_factor, **_LLAMA3_FIXED}
    kwargs.update(dict(family.export_extra))
    return AutoConfig.for_model(family.model_types[0], **kwargs)
