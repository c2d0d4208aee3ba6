"""One offline command that checks the GPU paths and measures the GPU figures on a node.

    python scripts/gpu_check.py --wheelhouse wh/ --out gpu_check/ --dry-run   # the plan; runs nothing heavy
    python scripts/gpu_check.py --wheelhouse wh/ --out gpu_check/             # all steps, within --budget-s
    python scripts/gpu_check.py --wheelhouse wh/ --out gpu_check/ --steps install,train

The wheelhouse comes from `bash scripts/make_wheelhouse.sh --python 3.12 --out wh/` on a
connected machine (docs/gpu.md). Every step runs in its own subprocess with its own time limit
(and all of them within --budget-s); a failing step is reported and the next still runs; nothing
uses the network.

  install    megatron-slm (test extra), the wheelhouse's extra packages and the baseline
             megatron-core, with `pip install --no-index`, into a throwaway venv on top of this
             Python's packages; then an import and a console script from outside the checkout
  gpu-tests  pytest -m gpu; the tests that cannot run here are listed with their skip reasons
  train      a Llama-3.2-1B-shaped model (SIMS vocabulary), bf16, local layer spec, NCCL, a few
             steps: tokens/s, TFLOP/s, MFU, peak memory (from the run's metrics.jsonl)
  train-fp8  the same on the Transformer Engine spec in FP8 -- only where transformer_engine imports
  units      an mhubert-base-sized random HuBERT on GPU batches (soundfile loader): audio s/s in
             bf16 and float32, and how many frames get the same unit in both
  generate   bench/generate.py, once it exists
  cpu-suite  pytest -m "not gpu and not slow" (GPU hidden) against the newest megatron-core of the
             wheelhouse; the tests that fail are rerun against the baseline to tell the two apart

Results: <out>/gpu_check.json and <out>/gpu_check.md (a section bench/RESULTS.md takes as is),
rewritten after every step; logs in <out>/logs/. Exit status 0 when no step failed or timed out.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gpucheck.dryrun import collect_worker, dry_run
from gpucheck.manifest import ManifestError
from gpucheck.runner import Check
from gpucheck.steps import DEFAULT_LIMITS, STEP_NAMES
from gpucheck.units import units_worker


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wheelhouse", help="folder made by scripts/make_wheelhouse.sh")
    ap.add_argument("--out", default="gpu_check", help="results folder (default gpu_check/)")
    ap.add_argument("--dry-run", action="store_true", help="resolve the wheelhouse, print the plan, run nothing heavy")
    ap.add_argument("--steps", default=",".join(STEP_NAMES), help=f"comma-separated subset of {', '.join(STEP_NAMES)}")
    ap.add_argument("--budget-s", type=float, default=480, help="all steps together (default 480: 8 minutes)")
    ap.add_argument("--limit", action="append", default=[], metavar="STEP=SECONDS",
                    help="one step's time limit (defaults: " + ", ".join(f"{k} {v}" for k, v in DEFAULT_LIMITS.items())
                    + ")")
    ap.add_argument("--mcore", help="megatron-core version for the install (default: the baseline pinned in the "
                                    "wheelhouse, e.g. 0.16.1)")
    ap.add_argument("--train-preset", default="llama3.2-1b")
    ap.add_argument("--train-vocab", type=int, default=128256 + 502, help="vocabulary (default: Llama-3 + 500 units + 2)")
    ap.add_argument("--train-steps", type=int, default=12)
    ap.add_argument("--warmup-steps", type=int, default=3, help="steps left out of the medians (default 3)")
    ap.add_argument("--seq-length", type=int, default=2048)
    ap.add_argument("--micro-batch", type=int, default=2)
    ap.add_argument("--global-batch", type=int, default=16)
    ap.add_argument("--units-seconds", type=float, default=3600, help="audio per precision (default 3600 s)")
    ap.add_argument("--cpu-tests", type=lambda s: [t for t in s.split(",") if t],
                    help="cpu-suite: comma-separated test files or node ids (default: all, megatron-core users first)")
    ap.add_argument("--test-timeout", type=int, default=120, help="pytest-timeout per test (default 120 s)")
    ap.add_argument("--worker", choices=("units", "collect"), help=argparse.SUPPRESS)
    ap.add_argument("--units-device", default="cuda", help=argparse.SUPPRESS)  # cpu: a smoke run of the worker
    ap.add_argument("--simulate-devices", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--absent", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return args
    if not args.wheelhouse:
        ap.error("--wheelhouse is required")
    args.steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = [s for s in args.steps if s not in STEP_NAMES]
    if unknown:
        ap.error(f"--steps: unknown {', '.join(unknown)} (choose from {', '.join(STEP_NAMES)})")
    args.limits = dict(DEFAULT_LIMITS)
    for item in args.limit:
        name, _, value = item.partition("=")
        if name not in DEFAULT_LIMITS or not value.isdigit():
            ap.error(f"--limit {item!r}: expected STEP=SECONDS with STEP in {', '.join(STEP_NAMES)}")
        args.limits[name] = int(value)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker == "units":
        units_worker(Path(args.out), args.units_seconds, args.units_device)
        return 0
    if args.worker == "collect":
        collect_worker(Path(args.out), args.simulate_devices, tuple(filter(None, args.absent.split(","))))
        return 0
    try:
        if args.dry_run:
            return dry_run(args)
        return Check(args).run()
    except ManifestError as e:
        print(f"[gpu_check] error: {e}", file=sys.stderr)
        return 2
