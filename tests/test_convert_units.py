"""Converter pieces without Megatron: family detection, config mapping, transforms, vocabulary
rows, HF file validation, staged output directories."""
import json

import pytest
import torch

from megatron_slm.convert import mapping
from megatron_slm.convert.families import (
    ConversionError, TensorMap, arch_from_hf_config, family_of, hf_config_from_arch)
from megatron_slm.convert.hf_io import HFReader, ShardWriter, staged_output_dir
from megatron_slm.convert.vocab_extension import VocabPlan, extend_rows, trim_rows

LLAMA32 = {"model_type": "llama", "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
           "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64, "vocab_size": 128256,
           "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "tie_word_embeddings": True,
           "rope_theta": 500000.0, "hidden_act": "silu",
           "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}


def test_llama32_config_maps_to_the_preset_shape():
    from megatron_slm.models.presets import get_preset

    family, arch = arch_from_hf_config(LLAMA32)
    assert family.name == "llama"
    assert arch == get_preset("llama3.2-1b")


def test_transformers5_rope_parameters_and_qwen2():
    cfg = {**LLAMA32, "model_type": "qwen2", "rope_scaling": None, "tie_word_embeddings": False,
           "rope_parameters": {"rope_type": "default", "rope_theta": 1e6}}
    cfg.pop("rope_theta")
    family, arch = arch_from_hf_config(cfg)
    assert (family.name, arch.qkv_bias, arch.rope_scaling, arch.rotary_base, arch.tie_embeddings) == \
        ("qwen2", True, False, 1e6, False)


@pytest.mark.parametrize("change, message", [
    ({"model_type": "gpt2"}, "model_type='gpt2' is not a supported family"),
    ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "rope_type='yarn'"),
    ({"rope_scaling": {**LLAMA32["rope_scaling"], "high_freq_factor": 2.0}}, "high_freq_factor=2.0"),
    ({"hidden_act": "gelu"}, "hidden_act='gelu'"),
    ({"attention_bias": True}, "attention_bias=True"),
    ({"model_type": "mistral", "sliding_window": 4096}, "sliding-window attention"),
    ({"num_hidden_layers": None}, "missing required field 'num_hidden_layers'"),
])
def test_unsupported_configs_are_rejected_by_name(change, message):
    with pytest.raises(ConversionError, match=message.replace("(", r"\(").replace("[", r"\[")):
        arch_from_hf_config({**LLAMA32, **change}, where="x/config.json")


def test_exported_config_round_trips_through_transformers():
    _, arch = arch_from_hf_config(LLAMA32)
    cfg = hf_config_from_arch(arch, "bfloat16", 1, 2).to_dict()
    _, back = arch_from_hf_config(cfg)
    assert back == arch


def test_qkv_is_grouped_per_query_group_and_inverts():
    _, arch = arch_from_hf_config({**LLAMA32, "hidden_size": 8, "num_attention_heads": 4,
                                   "num_key_value_heads": 2, "head_dim": 1})
    tm = family_of("qwen2").tensors_for_layer(arch.replace(qkv_bias=True), 0)[2]
    assert tm.mcore.endswith("linear_qkv.bias")
    q, k, v = torch.tensor([0., 1, 2, 3]), torch.tensor([10., 11]), torch.tensor([20., 21])
    fused = mapping.to_mcore(tm, [q, k, v], arch)
    # group 0: q0 q1 k0 v0, group 1: q2 q3 k1 v1
    assert fused.tolist() == [0, 1, 10, 20, 2, 3, 11, 21]
    assert [t.tolist() for t in mapping.to_hf(tm, fused, arch)] == [q.tolist(), k.tolist(), v.tolist()]
    w = [torch.randn(4, 8), torch.randn(2, 8), torch.randn(2, 8)]
    tmw = TensorMap("w", ("q", "k", "v"), "qkv")
    assert all(torch.equal(a, b) for a, b in zip(mapping.to_hf(tmw, mapping.to_mcore(tmw, w, arch), arch), w))
    gu = TensorMap("fc1", ("g", "u"), "gate_up")
    g, u = torch.randn(3, 8), torch.randn(3, 8)
    assert torch.equal(mapping.to_mcore(gu, [g, u], arch)[:3], g)
    assert all(torch.equal(a, b) for a, b in zip(mapping.to_hf(gu, mapping.to_mcore(gu, [g, u], arch), arch), [g, u]))


@pytest.mark.parametrize("init", ["mean", "normal", "zero"])
def test_new_rows_follow_the_init_and_padding_is_zero(init):
    hf = torch.randn(20, 4) + 3.0  # 20 rows, tokenizer V=16 (Qwen-like unused rows 16..19)
    plan = VocabPlan(text_vocab_size=16, copy_rows=16, vocab_size=16 + 5 + 2, padded_vocab_size=32, init=init)
    out = extend_rows(hf, plan, torch.float32)
    assert out.shape == (32, 4) and torch.equal(out[:16], hf[:16])
    new = out[16:23]
    if init == "mean":
        assert torch.allclose(new, hf[:16].mean(0).expand(7, -1))
    elif init == "zero":
        assert not new.any()
    else:
        assert new.std() > 0 and abs(new.mean()) < 1.5 and not torch.equal(new[0], new[1])
        assert torch.equal(new, extend_rows(hf, plan, torch.float32)[16:23])  # seeded
    assert not out[23:].any()
    assert torch.equal(trim_rows(out, 23), out[:23])


def test_reader_rejects_missing_and_truncated_shards(tmp_path):
    from safetensors.torch import save_file

    save_file({"a": torch.ones(4, 4)}, str(tmp_path / "model-00001-of-00002.safetensors"))
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    with pytest.raises(ConversionError, match="lists shard model-00002-of-00002.safetensors, which is missing"):
        HFReader(tmp_path)
    save_file({"b": torch.ones(64, 64)}, str(tmp_path / "model-00002-of-00002.safetensors"))
    assert torch.equal(HFReader(tmp_path).get("b"), torch.ones(64, 64))
    shard = tmp_path / "model-00002-of-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:1000])
    with pytest.raises(ConversionError, match="truncated"):
        HFReader(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(ConversionError, match="re-save it with safe_serialization"):
        HFReader(empty)


def test_shard_writer_splits_and_indexes(tmp_path):
    w = ShardWriter(tmp_path, max_shard_bytes=300)
    for i in range(5):
        w.add(f"t{i}", torch.full((32,), float(i)))  # 128 bytes each -> 2 per shard
    assert w.close() == 3
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert index["weight_map"]["t4"] == "model-00003-of-00003.safetensors"
    assert torch.equal(HFReader(tmp_path).get("t3"), torch.full((32,), 3.0))


def test_staged_output_dir_leaves_nothing_on_failure(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with staged_output_dir(out) as tmp:
            (tmp / "half.bin").write_bytes(b"x")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with staged_output_dir(out) as tmp:
        (tmp / "done").write_text("1")
    assert (out / "done").is_file()
    with pytest.raises(ConversionError, match="already exists"):
        with staged_output_dir(out):
            pass


def test_layout_errors_name_the_right_flag_when_tp_equals_pp():
    from megatron_slm.convert.families import ConversionError
    from megatron_slm.convert.hf_to_mcore import check_layout
    from megatron_slm.models.presets import get_preset

    arch = get_preset("tiny").replace(num_attention_heads=6, num_query_groups=3, ffn_hidden_size=192, num_layers=4)
    with pytest.raises(ConversionError, match="num_hidden_layers=4 does not divide by --pp 3"):
        check_layout(arch, 3, 3, "config.json")
