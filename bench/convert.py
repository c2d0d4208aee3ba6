#!/usr/bin/env python
"""Benchmark: streaming `hf-to-mcore` vs the naive transformers path, side by side.

Writes a random Llama-3.2-1B-shaped HF checkpoint (bf16, ~2.5 GB; --size 3b for 3B) with a
128256-token tokenizer into a temp dir, then runs, each in its own subprocess:

  naive      AutoModelForCausalLM.from_pretrained + add the 502 tokens +
             resize_token_embeddings(pad to 128) + save_pretrained
  ours-tp1   tools/convert_checkpoint.py hf-to-mcore --tp 1 --pp 1
  ours-tp2   tools/convert_checkpoint.py hf-to-mcore --tp 2 --pp 2

and prints wall time and peak RSS of each (os.wait4 per child) with ratios to naive.
Target: peak RSS <= 0.5x naive, time <= 1x naive.

    python bench/convert.py [--size 1b|3b] [--keep DIR]
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHAPES = {
    "1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
               num_key_value_heads=8, head_dim=64),
    "3b": dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=28, num_attention_heads=24,
               num_key_value_heads=8, head_dim=128),
}
VOCAB = 128256

MAKE = """
import sys
from pathlib import Path
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast
import torch, json
from megatron_slm.testing.random_hf import make_random_hf_model, LLAMA3_ROPE
out, shape = Path(sys.argv[1]), json.loads(sys.argv[2])
words = {"<|begin_of_text|>": 0, "<|end_of_text|>": 1, **{f"w{i}": i for i in range(2, %d)}}
tok = Tokenizer(models.WordLevel(words, unk_token="<|end_of_text|>"))
tok.pre_tokenizer = pre_tokenizers.Whitespace()
fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>")
(out / "tok").mkdir(parents=True)
fast.save_pretrained(str(out / "tok"))
make_random_hf_model(out / "hf", "llama", out / "tok", dtype=torch.bfloat16, vocab_size=%d,
                     tie_word_embeddings=True, rope_theta=500000.0, max_position_embeddings=131072,
                     rope_scaling=LLAMA3_ROPE, **shape)
""" % (VOCAB, VOCAB)

NAIVE = """
import sys, torch
from transformers import AutoModelForCausalLM
from megatron_slm.vocab import SpeechVocab
src, out = sys.argv[1], sys.argv[2]
vocab = SpeechVocab.from_pretrained(src, num_units=500)
model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.bfloat16)
model.resize_token_embeddings(vocab.vocab_size, pad_to_multiple_of=128)
model.save_pretrained(out)
vocab.save(out)
"""


def run_measured(cmd: list[str], label: str) -> tuple[float, float]:
    """(wall seconds, peak RSS GiB) of one child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    output = proc.stdout.read()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{label} failed:\n{output[-3000:]}")
    return wall, usage.ru_maxrss / 2**20  # ru_maxrss is KiB on Linux


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=sorted(SHAPES), default="1b", help="model shape (default 1b)")
    ap.add_argument("--keep", help="work in this dir and keep it (default: a temp dir, removed)")
    args = ap.parse_args()
    import json

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-convert-"))
    py = sys.executable
    try:
        t0 = time.perf_counter()
        if not (work / "hf" / "config.json").is_file():
            run_measured([py, "-c", MAKE, str(work), json.dumps(SHAPES[args.size])], "make model")
        size = sum(f.stat().st_size for f in (work / "hf").glob("*.safetensors")) / 2**30
        print(f"random Llama-3.2-{args.size}-shaped checkpoint: {size:.2f} GiB bf16 "
              f"({time.perf_counter() - t0:.0f}s to create)")
        rows = []
        for label, cmd in [
            ("naive (transformers)", [py, "-c", NAIVE, str(work / "hf"), str(work / "naive")]),
            ("hf-to-mcore tp1/pp1", [py, "tools/convert_checkpoint.py", "hf-to-mcore", "--hf-dir", str(work / "hf"),
                                     "--out", str(work / "mc1"), "--force"]),
            ("hf-to-mcore tp2/pp2", [py, "tools/convert_checkpoint.py", "hf-to-mcore", "--hf-dir", str(work / "hf"),
                                     "--out", str(work / "mc2"), "--tp", "2", "--pp", "2", "--force"]),
        ]:
            wall, rss = run_measured(cmd, label)
            rows.append((label, wall, rss))
            print(f"  {label:22s} {wall:7.1f} s   peak RSS {rss:6.2f} GiB", flush=True)
        _, base_t, base_m = rows[0]
        print("\nratios vs naive (lower is better; target RSS <= 0.5, time <= 1.0):")
        for label, wall, rss in rows[1:]:
            print(f"  {label:22s} time {wall / base_t:5.2f}x   peak RSS {rss / base_m:5.2f}x")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
