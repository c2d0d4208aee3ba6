#!/usr/bin/env python
"""Benchmark: generation tokens/s, measured side by side in one command.

  1. HF: our decoding loop (megatron_slm.generate: HFSource KV cache + masked sampling) against a
     plain transformers `model.generate` on the same model, batch and prompts; greedy and sampling
     (top-k 25, T 0.8), every continuation forced to --new-tokens (no early stop on either side).
     Target: ours / transformers >= 1.0x. Greedy tokens are compared as a check.
  2. Megatron: the same decoding at TP=1 and TP=2 (torchrun; gloo on the CPU), greedy.
     `--device cuda` runs both parts on GPUs (TP=2 when two are visible); `--json` writes the figures.

Models: random Llama-family speech-text LMs (the tokenizer of the demo + 100 units), converted
to Megatron and exported to HF like the demo's. `--size demo` is the demo's shape (hidden 64,
4 layers), `small` hidden 256, 4 layers. Methods take turns over --repeats rounds (order
alternating); tokens/s are medians, the ratio is the median of the per-round ratios (robust to a
shared machine's load).

    python bench/generate.py [--size small|demo] [--batch 8] [--new-tokens 128] [--repeats 7] [--skip-megatron]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SIZES = {"demo": dict(hidden_size=64, intermediate_size=176, num_hidden_layers=4, num_attention_heads=4,
                      num_key_value_heads=2),
         "small": dict(hidden_size=256, intermediate_size=704, num_hidden_layers=4, num_attention_heads=8,
                       num_key_value_heads=4)}
K = 100


def prompts(vocab, batch: int, length: int) -> list[list[int]]:
    """Corpus unit prompts of exactly `length` tokens (BOS + units), one per row."""
    from megatron_slm.units.records import iter_records

    recs = list(iter_records(REPO / "examples" / "data" / "tiny_corpus" / "units.jsonl"))
    return [[vocab.bos] + vocab.unit_ids(recs[i % len(recs)].units[:length - 1]).tolist() for i in range(batch)]


def no_stop_policy(vocab, rows: int):
    """Every real id but EOS, no stop tokens: both sides generate exactly the requested count."""
    import torch

    from megatron_slm.generate.sampling import TokenPolicy

    allowed = torch.arange(rows) < vocab.vocab_size
    allowed[vocab.eod] = False
    return TokenPolicy(allowed, {}, "any")


def run_ours(src, vocab, ids, cfg) -> tuple[float, list[list[int]]]:
    from megatron_slm.generate.decode import decode

    t0 = time.perf_counter()
    conts = decode(src, ids, [str(i) for i in range(len(ids))], no_stop_policy(vocab, src.rows), cfg)
    return time.perf_counter() - t0, [c.ids for c in conts]


def run_transformers(model, vocab, ids, cfg) -> tuple[float, list[list[int]]]:
    import torch

    x = torch.tensor(ids, device=model.device)
    kw = dict(do_sample=False) if cfg.greedy else dict(do_sample=True, top_k=cfg.top_k, temperature=cfg.temperature)
    t0 = time.perf_counter()
    with torch.no_grad():
        out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=cfg.max_new_tokens,
                             min_new_tokens=cfg.max_new_tokens, pad_token_id=vocab.pad, **kw)
    return time.perf_counter() - t0, out[:, x.shape[1]:].tolist()


def bench_hf(hf_dir: Path, args) -> list[tuple[str, float, float, str]]:
    import torch
    from transformers import AutoModelForCausalLM

    from megatron_slm.generate.backends import HFSource
    from megatron_slm.generate.sampling import SamplingConfig
    from megatron_slm.vocab import SpeechVocab

    vocab = SpeechVocab.from_pretrained(hf_dir, num_units=K)
    model = AutoModelForCausalLM.from_pretrained(hf_dir, local_files_only=True).eval().to(args.device)
    src = HFSource(model, vocab)
    ids = prompts(vocab, args.batch, args.prompt_tokens)
    n = args.batch * args.new_tokens
    rows = []
    for mode, cfg in (("greedy", SamplingConfig(greedy=True, max_new_tokens=args.new_tokens)),
                      ("top-k 25, T 0.8", SamplingConfig(max_new_tokens=args.new_tokens))):
        run_ours(src, vocab, ids[:2], cfg.with_(max_new_tokens=4))  # warm-up
        run_transformers(model, vocab, ids[:2], cfg.with_(max_new_tokens=4))
        times = {"ours": [], "transformers": []}
        toks = {}
        for r in range(args.repeats):
            order = (("ours", run_ours), ("transformers", run_transformers))
            for name, fn in (order if r % 2 == 0 else order[::-1]):
                torch.manual_seed(r)
                t, out = fn(src if name == "ours" else model, vocab, ids, cfg)
                assert all(len(o) == args.new_tokens for o in out), f"{name}: early stop"
                times[name].append(t)
                toks[name] = out
        same = sum(a == b for x, y in zip(toks["ours"], toks["transformers"]) for a, b in zip(x, y)) / n
        ours, theirs = statistics.median(times["ours"]), statistics.median(times["transformers"])
        # rounds run back to back, so the ratio within a round sees the same machine load
        paired = statistics.median(t / o for o, t in zip(times["ours"], times["transformers"]))
        rows.append((mode, n / ours, n / theirs, paired, f"{100 * same:.1f}%" if cfg.greedy else "-"))
    return rows


WORKER_MEGATRON = """
import json, sys, time, torch
from megatron_slm.generate.backends import load_megatron_source
from megatron_slm.generate.decode import decode
from megatron_slm.generate.sampling import SamplingConfig
from megatron_slm.vocab import SpeechVocab
sys.path.insert(0, sys.argv[5])
from generate import prompts, no_stop_policy
mc, tp, batch, new = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
length, repeats = int(sys.argv[6]), int(sys.argv[7])
vocab = SpeechVocab.from_pretrained(mc + "/tokenizer", num_units=%d)
src = load_megatron_source(mc, vocab, tp=tp)
ids = prompts(vocab, batch, length)
cfg = SamplingConfig(greedy=True, max_new_tokens=new)
policy = no_stop_policy(vocab, src.rows)
decode(src, ids[:2], ["a", "b"], policy, cfg.with_(max_new_tokens=4))
times = []
for r in range(repeats):
    t0 = time.perf_counter()
    conts = decode(src, ids, [str(i) for i in range(batch)], policy, cfg)
    times.append(time.perf_counter() - t0)
if torch.distributed.get_rank() == 0:
    print("RESULT " + json.dumps({"times": times, "ids": [c.ids for c in conts]}))
from megatron_slm.runtime.distributed import destroy_distributed
destroy_distributed()
""" % K


def tp_sizes(args) -> tuple[int, ...]:
    if args.device == "cpu":
        return (1, 2)
    import torch

    return (1, 2) if torch.cuda.device_count() >= 2 else (1,)


def bench_megatron(mc_dir: Path, args, tmp: Path) -> dict[int, dict]:
    script = tmp / "worker_megatron.py"
    script.write_text(WORKER_MEGATRON)
    out = {}
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": str(args.threads_per_rank),
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    if args.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # Megatron picks CUDA whenever it sees a GPU
    for tp in tp_sizes(args):
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={tp}", "--master_addr=127.0.0.1",
               f"--master_port={29600 + tp}", str(script), str(mc_dir), str(tp), str(args.batch), str(args.new_tokens),
               str(REPO / "bench"), str(args.prompt_tokens), str(args.repeats)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
        if proc.returncode != 0 or line is None:
            sys.exit(f"megatron TP={tp} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
        out[tp] = json.loads(line[len("RESULT "):])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=sorted(SIZES), default="small")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--prompt-tokens", type=int, default=50)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=None, help="torch threads of the HF part (default: torch's)")
    ap.add_argument("--threads-per-rank", type=int, default=1, help="OMP threads of each Megatron rank (default 1)")
    ap.add_argument("--skip-megatron", action="store_true")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda: the HF models and the Megatron ranks")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    import torch

    from megatron_slm.testing.tiny_slm import make_tiny_slm

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-generate-") as tmp:
        t0 = time.perf_counter()
        mc, hf = make_tiny_slm(Path(tmp) / "slm", num_units=K, tp=2, pp=1, **SIZES[args.size])
        print(f"model: {args.size} {SIZES[args.size]}, vocab 614 (+ padding on Megatron); batch {args.batch}, "
              f"prompt {args.prompt_tokens} tokens, {args.new_tokens} new tokens, {args.repeats} rounds, "
              f"{torch.get_num_threads()} torch threads (made in {time.perf_counter() - t0:.0f} s)\n")
        print("| HF decoding | ours tokens/s | transformers generate tokens/s | ours / transformers "
              "(median of paired rounds) | greedy tokens equal |")
        print("|---|---|---|---|---|")
        figures: dict = {"size": args.size, "device": args.device, "batch": args.batch, "new_tokens": args.new_tokens}
        for mode, ours, theirs, paired, same in bench_hf(hf, args):
            print(f"| {mode} | {ours:.0f} | {theirs:.0f} | **{paired:.2f}x** | {same} |")
            key = "greedy" if mode == "greedy" else "sampling"
            figures.update({f"hf_{key}_ours_tokens_per_s": round(ours, 1),
                            f"hf_{key}_transformers_tokens_per_s": round(theirs, 1), f"hf_{key}_ratio": round(paired, 3)})
        if not args.skip_megatron:
            figures.update(megatron_part(mc, args, Path(tmp)))
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=1))
    return 0


def megatron_part(mc: Path, args, tmp: Path) -> dict:
    res = bench_megatron(mc, args, tmp)
    n = args.batch * args.new_tokens
    rate = {tp: n / statistics.median(r["times"]) for tp, r in res.items()}
    same = res[1]["ids"] == res[2]["ids"] if 2 in res else None
    print(f"\n| Megatron on {args.device} (greedy, {args.threads_per_rank} thread/rank) | tokens/s | vs TP=1 |")
    print("|---|---|---|")
    for tp in rate:
        print(f"| TP={tp} | {rate[tp]:.0f} | {rate[tp] / rate[1]:.2f}x |")
    print(f"\nTP=2 tokens equal to TP=1: {same}")
    return {**{f"megatron_tp{tp}_tokens_per_s": round(r, 1) for tp, r in rate.items()}, "megatron_tp2_equal_tp1": same}


if __name__ == "__main__":
    sys.exit(main())
