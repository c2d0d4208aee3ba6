"""Shared test plumbing: the repository paths tests use, GPU marker handling, helpers to launch real torchrun jobs,
and what several job files share: a tiny training launch, the one-error-line check, a converted tiny model,
a folder of hostile audio."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

# The repository's files the tests use, declared once.
REPO = Path(__file__).resolve().parent.parent
TINY_CPU = REPO / "examples" / "configs" / "tiny_cpu.yaml"  # the 2-layer CPU training config
CORPUS = REPO / "examples" / "data" / "tiny_corpus"  # bundled audio, alignments, units, k-means
TOKENIZER = REPO / "examples" / "tokenizer" / "tiny-bpe"  # the bundled tiny BPE tokenizer
PRETRAIN = REPO / "pretrain_slm.py"
CONVERT = REPO / "tools" / "convert_checkpoint.py"


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# The end of every fault-injection driver script: patch first (above it), then run the real CLI.
DRIVER_MAIN = """
from megatron_slm.cli import run_main
from megatron_slm.training.trainer import Trainer
if __name__ == "__main__":
    run_main(lambda cfg: Trainer(cfg).run())
"""


def _env() -> dict:
    env = dict(os.environ)
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_WORLD_SIZE"):
        env.pop(key, None)  # an in-process test may have formed a group of one
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONWARNINGS"] = "ignore"
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_torchrun(nproc: int, script: str | Path, args: list[str], cwd: Path, timeout: int = 300,
                 check: bool = True) -> subprocess.CompletedProcess:
    """Launch `torchrun --nproc_per_node=nproc script args` on gloo with a free port."""
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
           "--master_addr=127.0.0.1", f"--master_port={_free_port()}",
           str(script), *map(str, args)]
    proc = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"torchrun failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def run_python(args: list[str], cwd: Path, timeout: int = 300, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=_env(), capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"command failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_metrics(run_dir: Path) -> tuple[list[dict], list[dict]]:
    """(training lines, validation lines) of a run's metrics.jsonl."""
    lines = [json.loads(l) for l in (Path(run_dir) / "metrics.jsonl").read_text().splitlines() if l.strip()]
    return ([l for l in lines if not l.get("validation") and not l.get("eval")],
            [l for l in lines if l.get("validation")])


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="module")
def gloo_group():
    """A 1-rank gloo process group for in-process code that needs torch.distributed (Megatron's
    blended dataset builder); an existing group is reused."""
    import tempfile

    if torch.distributed.is_initialized():
        yield
        return
    torch.distributed.init_process_group("gloo", init_method=f"file://{tempfile.mktemp()}", rank=0, world_size=1)
    yield
    torch.distributed.destroy_process_group()


def train(args, cwd, check=True, timeout=300):
    """pretrain_slm.py on the tiny CPU config with these overrides."""
    return run_python([PRETRAIN, "--config", TINY_CPU, *args], cwd=cwd, check=check, timeout=timeout)


def one_error_line(proc) -> str:
    """The CLI's promise: exit 2 and one `error:` line, no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-2000:]
    return errors[0]


@pytest.fixture(scope="session")
def converted(tmp_path_factory) -> Path:
    """A tiny HF Llama converted with K=100 units (what a user trains from)."""
    from megatron_slm.testing.random_hf import make_random_hf_model

    root = tmp_path_factory.mktemp("converted")
    make_random_hf_model(root / "base", "llama", tokenizer_dir=TOKENIZER, vocab_size=512, hidden_size=64,
                         intermediate_size=176, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256, rope_theta=10000.0, tie_word_embeddings=True)
    run_python([CONVERT, "hf-to-mcore", "--hf-dir", root / "base", "--out", root / "ckpt", "--num-units", "100",
                "--dtype", "fp32"], cwd=root)
    return root


SR = 16000  # the tiny corpus' sample rate


def _speech(seconds: float) -> np.ndarray:
    """Real speech (the tiny corpus' espeak audio), `seconds` long."""
    audio, sr = sf.read(CORPUS / "audio" / "s01_01.flac", dtype="float32")
    assert sr == SR
    return audio[: int(seconds * SR)]


@pytest.fixture(scope="module")
def bad_audio(tmp_path_factory) -> Path:
    """good.wav, tone.mp3, nan.wav, inf.wav, silent.wav, trunc.wav (header 2 s, data 0.67 s), loud.wav
    (finite samples whose log-mel overflows float32)."""
    d = tmp_path_factory.mktemp("audio")
    x = _speech(2.0)
    sf.write(d / "good.wav", x, SR, subtype="PCM_16")
    sf.write(d / "tone.mp3", x, SR, format="MP3")
    y = x.copy()
    y[1000:1100] = np.nan
    sf.write(d / "nan.wav", y, SR, subtype="FLOAT")
    y = x.copy()
    y[5] = np.inf
    sf.write(d / "inf.wav", y, SR, subtype="FLOAT")
    sf.write(d / "silent.wav", np.zeros(SR, np.float32), SR, subtype="PCM_16")
    full = (d / "good.wav").read_bytes()
    (d / "trunc.wav").write_bytes(full[: 44 + int(0.67 * SR) * 2])  # the header still says 2 s
    sf.write(d / "loud.wav", x * 1e30, SR, subtype="FLOAT")
    return d
