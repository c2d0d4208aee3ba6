"""A DPO step against two LM steps over the same tokens, and the one-off reference pass against one
epoch of DPO steps, through the real trainer on CPU.

    python bench/post_training.py [--steps 12] [--pairs 96] [--batch 8] [--seq 256] [overrides ...]

One random model (4 layers, h256) saved once; then, each a `pretrain_slm.py` run from it:
  dpo   train.objective=dpo on `--pairs` synthetic preference pairs whose rows fill the sequence,
        `--batch` pairs per step (2 x batch sequences: chosen and rejected)
  lm    the same model on synthetic LM data, `--batch` sequences per step: two of its steps read
        the tokens of one DPO step (run before and after dpo, both counted)
Prints the median and the fastest step times (warm-up steps skipped; on a shared CPU the fastest is
the least disturbed), DPO step / 2 LM steps (target <= 1.1: the reference is computed once, not per
step), and the reference pass against one epoch of DPO steps.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
TOKENIZER = REPO / "examples" / "tokenizer" / "tiny-bpe"
K = 20


def run(args: list, cwd: Path) -> None:
    import os

    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # one intra-op thread: steady timings on a shared CPU
    proc = subprocess.run([sys.executable, str(REPO / "pretrain_slm.py"), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, env=env)
    if proc.returncode:
        sys.exit(f"run failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")


def step_times(run_dir: Path, skip: int) -> list[float]:
    lines = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines() if l.strip()]
    return [l["step_time_s"] for l in lines if "step_time_s" in l and not l.get("validation")][skip:]


def write_pairs(path: Path, n: int, seq: int, seed: int = 0) -> None:
    """Speech pairs whose prompt + completion fill the sequence (BOS + prompt + completion + EOS)."""
    import numpy as np

    from megatron_slm.testing.synthetic_units import write_synthetic_corpus
    from megatron_slm.units.records import read_meta, write_meta

    rng = np.random.default_rng(seed)
    half = seq // 2
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            prompt = rng.integers(0, K, half - 1).tolist()
            chosen = rng.integers(0, K, seq - half - 1).tolist()
            rejected = rng.integers(0, K, seq - half - 1).tolist()
            f.write(json.dumps({"id": i, "prompt": {"units": prompt}, "chosen": {"units": chosen},
                                "rejected": {"units": rejected}}) + "\n")
    units = write_synthetic_corpus(str(path.parent / "units"), n=2, k=K).units
    write_meta(str(path), read_meta(units))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=12, help="steps per run (the first 3 are warm-up)")
    ap.add_argument("--pairs", type=int, default=96, help="preference pairs (one epoch = pairs / batch steps)")
    ap.add_argument("--batch", type=int, default=8, help="pairs per DPO step = sequences per LM step")
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("overrides", nargs="*", help="config overrides for both runs")
    args = ap.parse_args()

    from megatron_slm.posttrain.preprocess import PairJob, run as preprocess

    work = Path(tempfile.mkdtemp(prefix="bench_posttrain_"))
    shape = ["model.num_layers=4", "model.hidden_size=256", "model.ffn_hidden_size=704",
             f"train.seq_length={args.seq}", "logging.tensorboard=false", *args.overrides]
    base = ["--config", REPO / "examples/configs/tiny_cpu.yaml", *shape]
    run([*base, "train.iters=0", f"data.tokenizer={TOKENIZER}", f"data.num_units={K}",
         f"checkpoint.save={work / 'init'}"], work)
    write_pairs(work / "pref.jsonl", args.pairs, args.seq)
    preprocess(PairJob("preference", str(TOKENIZER), [str(work / "pref.jsonl")], str(work / "pref"),
                       max_length=args.seq + 1, progress=False))
    common = [*base, f"train.iters={args.steps}", f"model.from={work / 'init'}", "train.micro_batch_size=2",
              f"train.global_batch_size={args.batch}", "train.eval_iters=0"]
    # LM before and after DPO: a load change on a shared machine then hits both sides alike
    run([*common, f"checkpoint.save={work / 'lm'}"], work)
    run([*common, "train.objective=dpo", "data.source=blend", f"data.blend=[{{path: {work / 'pref'}, kind: preference}}]",
         "data.split=100,0,0", f"checkpoint.save={work / 'dpo'}"], work)
    run([*common, f"checkpoint.save={work / 'lm2'}"], work)

    skip = 3
    times = {"dpo": step_times(work / "dpo", skip), "lm": step_times(work / "lm", skip) + step_times(work / "lm2", skip)}
    ref = json.loads((work / "dpo" / "reference" / "reference.json").read_text())
    print(f"model 4L h256, seq {args.seq}, {args.batch} pairs per DPO step ({2 * args.batch} sequences), "
          f"{args.steps - skip} steps after warm-up, one intra-op thread")
    for stat, fn in (("median", statistics.median), ("fastest", min)):
        dpo, lm = fn(times["dpo"]), fn(times["lm"])
        print(f"  {stat:7s} DPO step {dpo:7.3f} s | LM step ({args.batch} seqs) {lm:7.3f} s | "
              f"DPO step / 2 LM steps {dpo / (2 * lm):.3f} (target <= 1.1)")
    epoch = args.pairs / args.batch * statistics.median(times["dpo"])
    print(f"  reference pass {ref['seconds']:.3f} s for {ref['pairs']} pairs (once per run); one epoch of DPO steps "
          f"{epoch:.3f} s ({args.pairs // args.batch} steps at the median): reference / epoch = {ref['seconds'] / epoch:.3f}")
    print(f"(runs in {work})")


if __name__ == "__main__":
    main()
