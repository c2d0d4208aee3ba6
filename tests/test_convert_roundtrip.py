"""HF -> Megatron -> HF with tiny random models: bit-identical weights, new rows per --init,
the extended tokenizer, transformers loading/generation, already-extended imports, bad input,
and (one torchrun job, TP=2 x PP=2) Megatron logits equal to the HF model's. Families: Llama
(tied, untied, Llama-3 RoPE scaling), Qwen2 (q/k/v bias), Qwen3 (q/k norm, head_dim != hidden/heads)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO, TOKENIZER

sys.path.insert(0, str(REPO / "tools"))
V, K = 512, 500  # tiny-bpe length, units
SHAPE = dict(hidden_size=64, intermediate_size=176, num_hidden_layers=4, num_attention_heads=4,
             num_key_value_heads=2)
MODELS = {  # name -> (model_type, config, init)
    "llama_untied": ("llama", dict(vocab_size=V, tie_word_embeddings=False, rope_theta=500000.0,
                                   max_position_embeddings=16384, rope_scaling={
                                       "rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                       "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}), "mean"),
    "llama_tied": ("llama", dict(vocab_size=V, tie_word_embeddings=True, max_position_embeddings=16384,
                                 rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                               "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}),
                   "zero"),
    # Qwen-like: the embedding has unused rows beyond the tokenizer (600 > 512)
    "qwen2_tied": ("qwen2", dict(vocab_size=600, tie_word_embeddings=True, rope_theta=1e6,
                                 max_position_embeddings=512), "normal"),
    # Qwen3: per-head q/k RMSNorm and a head dim (24) that is not hidden/heads (16)
    "qwen3_tied": ("qwen3", dict(vocab_size=V, tie_word_embeddings=True, head_dim=24, rope_theta=1e6,
                                 max_position_embeddings=512), "mean"),
    "qwen3_untied": ("qwen3", dict(vocab_size=V, tie_word_embeddings=False, head_dim=24, rope_theta=1e6,
                                   max_position_embeddings=512), "mean"),
}


def _load_all(d: Path) -> dict:
    out = {}
    for f in sorted(d.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    from megatron_slm.convert.hf_to_mcore import convert_hf_to_mcore
    from megatron_slm.convert.mcore_to_hf import convert_mcore_to_hf
    from megatron_slm.testing.random_hf import make_random_hf_model

    root = tmp_path_factory.mktemp("convert")
    for name, (model_type, cfg, init) in MODELS.items():
        make_random_hf_model(root / f"{name}_hf", model_type, TOKENIZER, **SHAPE, **cfg)
        convert_hf_to_mcore(root / f"{name}_hf", root / f"{name}_mc", tp=2, pp=2, num_units=K, init=init,
                            progress=False)
        convert_mcore_to_hf(root / f"{name}_mc", root / f"{name}_back", progress=False,
                            max_shard_size="100KB" if name == "llama_untied" else "2GB")
    return root


@pytest.mark.parametrize("name", list(MODELS))
def test_round_trip_is_bit_identical_and_new_rows_follow_init(work, name):
    from transformers import AutoTokenizer

    model_type, cfg, init = MODELS[name]
    V = len(AutoTokenizer.from_pretrained(str(work / f"{name}_hf")))  # a Qwen2 tokenizer class adds a token
    src, back = _load_all(work / f"{name}_hf"), _load_all(work / f"{name}_back")
    tied = cfg["tie_word_embeddings"]
    assert set(back) == set(src) - ({"lm_head.weight"} if tied else set())
    for key, t in src.items():
        if key in back and key not in ("model.embed_tokens.weight", "lm_head.weight"):
            assert torch.equal(back[key], t), key
    for key in ["model.embed_tokens.weight"] + ([] if tied else ["lm_head.weight"]):
        old, new = src[key], back[key]
        assert new.shape == (V + K + 2, SHAPE["hidden_size"])
        assert torch.equal(new[:V], old[:V]), key
        added = new[V:]
        if init == "mean":
            assert torch.allclose(added, old[:V].mean(0).expand_as(added), atol=1e-6)
        elif init == "zero":
            assert not added.any()
        else:  # normal with the std of the text rows; Qwen's unused rows 512..599 re-initialised too
            assert abs(added.std().item() - old[:V].std().item()) < 0.01
            assert not torch.equal(added[: 600 - V], old[V:600])
            assert V + K + 2 > 600
    info = json.loads((work / f"{name}_mc" / "slm_model.json").read_text())
    assert info["padded_vocab_size"] == 1024 and info["arch"]["vocab_size"] == V + K + 2
    conv = json.loads((work / f"{name}_mc" / "conversion.json").read_text())
    assert conv["init"] == init and not conv["already_extended"]


def test_exported_model_and_tokenizer_load_and_generate(work):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d = work / "llama_untied_back"
    assert (d / "model.safetensors.index.json").is_file()  # sharded (100KB shards)
    tok = AutoTokenizer.from_pretrained(str(d))
    assert tok.convert_tokens_to_ids("<Un5>") == V + 5
    assert tok.convert_tokens_to_ids("<text>") == V + 501
    assert tok.convert_tokens_to_ids("<speech>") == V + 500
    model = AutoModelForCausalLM.from_pretrained(str(d))
    ids = tok("once upon a time <Un5><Un7>", return_tensors="pt").input_ids
    assert (ids >= V).any()
    out = model.generate(ids, max_new_tokens=4, do_sample=False)
    assert out.shape == (1, ids.shape[1] + 4)


def test_already_extended_model_is_imported_as_is(work, tmp_path):
    from megatron_slm.convert.hf_to_mcore import convert_hf_to_mcore
    from megatron_slm.convert.mcore_to_hf import convert_mcore_to_hf

    summary = convert_hf_to_mcore(work / "llama_untied_back", tmp_path / "mc", num_units=K, dtype="bf16",
                                  progress=False)
    assert summary.already_extended and summary.plan.new_rows == 0
    convert_mcore_to_hf(tmp_path / "mc", tmp_path / "hf", dtype="fp32", progress=False)
    first, again = _load_all(work / "llama_untied_back"), _load_all(tmp_path / "hf")
    for key, t in first.items():
        assert torch.equal(again[key], t.to(torch.bfloat16).float()), key
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["vocab_size"] == V + K + 2


def test_bad_input_gives_one_clear_message(work, tmp_path, capsys):
    from convert_checkpoint import main

    def run(*argv):
        code = main(list(map(str, argv)))
        err = capsys.readouterr().err.strip()
        assert "Traceback" not in err
        return code, err

    code, err = run("hf-to-mcore", "--hf-dir", work / "llama_untied_back", "--out", tmp_path / "o", "--num-units", 100)
    assert code == 2 and "has 500 speech units" in err and "num_units=100" in err
    code, err = run("hf-to-mcore", "--hf-dir", work / "qwen2_tied_hf", "--out", tmp_path / "o", "--tp", 8)
    assert code == 2 and "num_attention_heads=4 does not divide by --tp 8" in err
    bad = tmp_path / "gpt2"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    code, err = run("hf-to-mcore", "--hf-dir", bad, "--out", tmp_path / "o")
    assert code == 2 and "model_type='gpt2' is not a supported family" in err
    nolatest = tmp_path / "nolatest"
    nolatest.mkdir()
    (nolatest / "slm_model.json").write_text((work / "llama_tied_mc" / "slm_model.json").read_text())
    code, err = run("mcore-to-hf", "--mcore-dir", nolatest, "--out", tmp_path / "o")
    assert code == 2 and "no latest_checkpointed_iteration.txt" in err
    code, err = run("mcore-to-hf", "--mcore-dir", work / "llama_tied_mc", "--out", work / "llama_tied_back")
    assert code == 2 and "already exists" in err
    assert not (tmp_path / "o").exists() and not any(p.name.startswith(".o.partial") for p in tmp_path.iterdir())


def test_verify_cli_single_process_passes_and_fails_on_tolerance(work, capsys):
    from convert_checkpoint import main

    args = ["verify", "--hf-dir", str(work / "qwen2_tied_back"), "--mcore-dir", str(work / "qwen2_tied_mc"),
            "--seq-length", "8"]
    assert main(args) == 0
    assert capsys.readouterr().out.startswith("OK: max |logit diff|")
    assert main(args + ["--tolerance", "0"]) == 1
    assert "FAIL" in capsys.readouterr().out


@pytest.mark.slow  # > 10 s: the full suite runs it, the inner loop does not
def test_megatron_tp2_pp2_matches_hf_logits(work):
    """One torchrun job (4 ranks, TP=2 x PP=2) compares every converted model with its source."""
    pairs = [f"{work / (n + '_hf')}:{work / (n + '_mc')}" for n in MODELS]
    import socket

    with socket.socket() as sock:  # torchrun's --master_port=0 does not reach the ranks' init
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=4", f"--master_port={port}",
           __file__, *pairs]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    lines = [l for l in proc.stdout.splitlines() if l.startswith("VERIFY")]
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert len(lines) == len(MODELS), proc.stdout
    for line in lines:
        assert " OK: " in line, line


if __name__ == "__main__":  # rank body of the torchrun test above
    from megatron_slm.convert.streaming import CPU_RUNTIME
    from megatron_slm.convert.verify import compare
    from megatron_slm.runtime.distributed import destroy_distributed, init_distributed

    init_distributed(CPU_RUNTIME, tp=2, pp=2)
    for pair in sys.argv[1:]:
        hf_dir, mc_dir = pair.split(":")
        result = compare(hf_dir, mc_dir, seq_length=16)
        if int(os.environ["RANK"]) == 0:
            print(f"VERIFY {Path(mc_dir).name} {result.line()}", flush=True)
    destroy_distributed()
