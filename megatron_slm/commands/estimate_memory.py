"""Estimate the GPU memory a training config needs, per pipeline stage, before booking GPUs.

  python tools/estimate_memory.py --config examples/configs/sims_qwen2.5-7b_a100.yaml --preset qwen2.5-7b
  python tools/estimate_memory.py --config my.yaml --world-size 16 parallel.tp=4 train.micro_batch_size=2

The architecture comes from the config's `model.from` checkpoint (slm_model.json) or preset;
before the base model is converted, name its preset with --preset. The method (weights,
fp32 gradients, Adam state sharded by the distributed optimizer, activations by recompute
setting, sequence parallelism and pipeline stage) is documented in megatron_slm/models/memory.py.
"""
from __future__ import annotations

import argparse
import sys


from megatron_slm.config import ConfigError, load_config
from megatron_slm.models.memory import (DEFAULT_OVERHEAD_GIB, FIT_FRACTION, GIB, config_arch,
                                        estimate_for_config)


def format_table(est, gpu_gib: float) -> str:
    cols = ("stage", "layers", "params", "weights", "grads", "optimizer", "activations", "logits", "overhead",
            "total GiB")
    rows = []
    for s in est.stages:
        rows.append((str(s.stage), str(s.layers), f"{s.params / 1e6:.1f}M",
                     *(f"{b / GIB:.2f}" for b in (s.weight_bytes, s.grad_bytes, s.optimizer_bytes,
                                                  s.activation_bytes, s.logits_bytes, s.overhead_bytes)),
                     f"{s.total_gib:.2f}"))
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    line = lambda values: "  ".join(v.rjust(w) for v, w in zip(values, widths))  # noqa: E731
    out = [line(cols), line(["-" * w for w in widths]), *map(line, rows)]
    verdict = "fits" if est.fits(gpu_gib) else "does NOT fit"
    out.append(f"peak: {est.peak_gib:.2f} GiB on stage {est.peak_stage}; {verdict} in {FIT_FRACTION:.0%} of a "
               f"{gpu_gib:g} GiB GPU")
    return "\n".join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="training YAML (examples/configs/...)")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides")
    parser.add_argument("--world-size", type=int, default=8, help="GPUs in the job (default 8)")
    parser.add_argument("--preset", help="architecture preset to use when model.from is not converted yet")
    parser.add_argument("--gpu-memory-gib", type=float, default=79.2, help="usable memory per GPU (default 79.2: 80 GB)")
    parser.add_argument("--overhead-gib", type=float, default=DEFAULT_OVERHEAD_GIB,
                        help="fixed per-GPU allowance: CUDA context, workspaces, fragmentation (default 2)")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        p = cfg.parallel
        if args.world_size < 1 or args.world_size % (p.tp * p.pp):
            raise ConfigError(f"--world-size {args.world_size} is not divisible by parallel.tp={p.tp} x parallel.pp={p.pp}")
        arch, padded = config_arch(cfg, args.preset)
        if arch.num_layers % p.pp:
            raise ConfigError(f"num_layers={arch.num_layers} is not divisible by parallel.pp={p.pp}")
        est = estimate_for_config(cfg, arch, padded, args.world_size, args.overhead_gib)
    except ConfigError as e:
        hint = " (before converting the base model, name its shape with --preset)" if "slm_model.json" in str(e) \
            and not args.preset else ""
        print(f"error: {e}{hint}", file=sys.stderr)
        return 2
    lay = est.layout
    print(f"{args.config}: {arch.num_layers}L h{arch.hidden_size} vocab {arch.vocab_size} (padded {padded}) | "
          f"tp {lay.tp} pp {lay.pp} dp {lay.dp}{' vpp ' + str(lay.vpp) if lay.vpp else ''}"
          f"{' sp' if lay.sequence_parallel else ''}{' dist-opt' if lay.distributed_optimizer else ''} | "
          f"recompute {lay.recompute} | {lay.dtype}{' fp8' if lay.fp8 else ''} | mbs {lay.micro_batch_size} x "
          f"{lay.num_microbatches} microbatches x {lay.seq_length} tokens")
    print(format_table(est, args.gpu_memory_gib))
    return 0


if __name__ == "__main__":
    sys.exit(main())
