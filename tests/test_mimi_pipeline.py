"""Mimi units through the whole pipeline with tiny models: extract -> hf-to-mcore --units-meta (TP=2)
-> interleaved dataset (whole frames) -> 5 training steps at TP=1, TP=2 and PP=2 (same losses to
1e-4, codebook losses reported) -> export -> word-shuffle eval (HF = Megatron) -> greedy
generation identical from HF and Megatron, whole frames -> WAV of frames x 1920 samples."""
from __future__ import annotations

import json
import os
import wave

import numpy as np
import pytest

from conftest import CORPUS, PRETRAIN, REPO, TINY_CPU, TOKENIZER, read_metrics, run_python, run_torchrun

pytestmark = pytest.mark.slow

N_Q, K, V = 2, 256, 512


def test_mimi_units_from_extraction_to_wav(tmp_path, monkeypatch):
    from megatron_slm.testing.random_hf import make_random_hf_model
    from megatron_slm.testing.tiny_mimi import save_tiny_mimi

    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    mimi = save_tiny_mimi(tmp_path / "mimi")
    aligns = tmp_path / "alignments.jsonl"
    aligns.write_text("".join(open(CORPUS / "alignments.jsonl").readlines()[:12]))
    os.symlink(CORPUS / "audio", tmp_path / "audio")
    units = tmp_path / "units" / "mimi2.jsonl"
    run_python(["tools/extract_units.py", "--alignments", aligns, "--tokenizer", "mimi", "--model-dir", mimi,
                "--num-codebooks", N_Q, "--out", units, "--device", "cpu", "--audio-backend", "soundfile"], cwd=REPO)

    make_random_hf_model(tmp_path / "base", "llama", tokenizer_dir=TOKENIZER,
                         vocab_size=V, hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         rope_theta=10000.0, tie_word_embeddings=True)
    convert = REPO / "tools" / "convert_checkpoint.py"
    run_python([convert, "hf-to-mcore", "--hf-dir", tmp_path / "base", "--out", tmp_path / "ckpt", "--tp", "2",
                "--units-meta", f"{units}.meta.json", "--dtype", "fp32", "--init", "normal"], cwd=tmp_path)
    tok = tmp_path / "ckpt" / "tokenizer"
    assert json.loads((tok / "speech_units.json").read_text())["num_codebooks"] == N_Q

    run_python(["tools/preprocess_data.py", "interleaved", "--tokenizer", tok, "--units", units, "--alignments", aligns,
                "--out-prefix", tmp_path / "data" / "inter", "--quiet"], cwd=REPO)

    runs = {}
    for name, nproc, extra in (("tp1", 1, []), ("tp2", 2, ["parallel.tp=2"]), ("pp2", 2, ["parallel.pp=2"])):
        runs[name] = tmp_path / name
        args = ["--config", TINY_CPU, f"model.from={tmp_path / 'ckpt'}", "data.source=blend",
                f"data.blend=[{{path: {tmp_path / 'data' / 'inter'}, kind: interleaved}}]", f"data.tokenizer={tok}",
                "data.split=100,0,0", "train.iters=5", f"checkpoint.save={runs[name]}", *extra]
        if nproc == 1:
            run_python([PRETRAIN, *args], cwd=tmp_path)
        else:
            run_torchrun(nproc, PRETRAIN, args, cwd=tmp_path)
    losses = {name: read_metrics(run)[0] for name, run in runs.items()}
    assert len(losses["tp1"]) == 5
    for name in ("tp2", "pp2"):
        for a, b in zip(losses["tp1"], losses[name]):
            for key in ("lm_loss", "speech_loss", "semantic_loss", "acoustic_loss"):
                assert abs(a[key] - b[key]) < 1e-4, (name, key, a[key], b[key])
    assert all(line["semantic_loss"] is not None and line["acoustic_loss"] is not None for line in losses["tp1"])

    run_python([convert, "mcore-to-hf", "--mcore-dir", runs["tp2"], "--out", tmp_path / "hf"], cwd=tmp_path)
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["vocab_size"] == V + K * N_Q + 2

    items = tmp_path / "eval" / "word_shuffle.jsonl"
    run_python(["tools/prepare_eval_data.py", "word-shuffle", "--units-file", units, "--alignments", aligns,
                "--out", items], cwd=REPO)
    acc = {}
    for flag, model in (("--hf-dir", tmp_path / "hf"), ("--mcore-dir", runs["tp2"])):
        report = tmp_path / f"report{flag}.json"
        run_python(["tools/eval_slm.py", flag, model, "--items", items, "--out", report], cwd=REPO)
        acc[flag] = json.loads(report.read_text())["tasks"]["word_shuffle"]["accuracy"]
    assert abs(acc["--hf-dir"] - acc["--mcore-dir"]) < 1e-9

    gen = {}
    for flag, model in (("--hf-dir", tmp_path / "hf"), ("--mcore-dir", runs["tp2"])):
        out = tmp_path / f"gen{flag}.jsonl"
        run_python(["tools/generate.py", flag, model, "--prompt-units", units, "--prompt-seconds", "1.0",
                    "--greedy", "--max-new-tokens", "15", "--out", out, "--vocoder", mimi,
                    "--wav-dir", tmp_path / f"wav{flag}"], cwd=REPO)
        gen[flag] = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["generated_ids"] for r in gen["--hf-dir"]] == [r["generated_ids"] for r in gen["--mcore-dir"]]
    assert sum(len(r["units"]) for r in gen["--hf-dir"]) >= 4 * N_Q
    for row in gen["--hf-dir"]:
        u = np.asarray(row["units"])
        assert len(u) % N_Q == 0 and (u // K == np.arange(len(u)) % N_Q).all(), row
        prompt = row["prompt"]["segments"][0]["units"]
        assert len(prompt) % N_Q == 0 and len(prompt) == 12 * N_Q  # 1.0 s = 12.5 frames: whole frames kept
        if len(u):
            with wave.open(row["wav"]) as f:
                assert (f.getnframes(), f.getframerate()) == (len(u) // N_Q * 1920, 24000)
