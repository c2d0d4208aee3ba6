"""The family table: Qwen3's settings map to the architecture; what the model cannot express is refused."""
from __future__ import annotations

import pytest

from megatron_slm.convert.families import ConversionError, arch_from_hf_config, hf_config_from_arch

QWEN3 = dict(model_type="qwen3", hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
             num_attention_heads=16, num_key_value_heads=8, head_dim=128, vocab_size=151936, rms_norm_eps=1e-6,
             rope_theta=1000000.0, max_position_embeddings=40960, tie_word_embeddings=True, hidden_act="silu",
             attention_bias=False, use_sliding_window=False)


def test_qwen3_config_gives_qk_norm_and_its_own_head_dim():
    from megatron_slm.models.presets import PRESETS

    family, arch = arch_from_hf_config(QWEN3)
    assert family.name == "qwen3" and arch.qk_norm and not arch.qkv_bias
    assert arch.head_dim == 128 != arch.hidden_size // arch.num_attention_heads
    assert arch.replace(vocab_size=151669) == PRESETS["qwen3-0.6b"]  # the preset is the published shape
    exported = hf_config_from_arch(arch, "float32", None, None)
    assert exported.model_type == "qwen3" and exported.head_dim == 128 and exported.use_sliding_window is False


@pytest.mark.parametrize("change, reason", [
    (dict(use_sliding_window=True), "use_sliding_window"),
    (dict(attention_bias=True), "attention_bias"),
    (dict(model_type="gemma2"), "not a supported family"),
    (dict(model_type="qwen3_moe"), "not a supported family"),
])
def test_what_the_model_cannot_express_is_refused_with_its_setting(change, reason):
    with pytest.raises(ConversionError, match=reason):
        arch_from_hf_config({**QWEN3, **change})
