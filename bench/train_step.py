"""Per-step time breakdown of the training loop on CPU, against a bare Megatron step.

    python bench/train_step.py [--steps 30] [overrides ...]

Runs `Trainer` on the tiny recipe (synthetic data, logging every step, metrics.jsonl and
TensorBoard on), then, in the same process on the same model and optimizer, a bare loop that
only calls the pipeline schedule and `optimizer.step()` on pre-fetched batches. Prints the
breakdown (data wait, forward-backward, optimizer, loop overhead) and ratios. Target: the time
outside forward-backward + optimizer is under 5% of the step.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()

    from megatron_slm.config import load_config
    from megatron_slm.training.trainer import Trainer

    run_dir = Path(tempfile.mkdtemp(prefix="bench_train_"))
    cfg = load_config(REPO / "examples/configs/tiny_cpu.yaml",
                      [f"train.iters={args.steps}", "logging.tensorboard=true", f"checkpoint.save={run_dir}",
                       "train.seq_length=256", "model.num_layers=4", "model.hidden_size=256",
                       "model.ffn_hidden_size=704", *args.overrides])
    trainer = Trainer(cfg)
    trainer.run()
    lines = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [l for l in lines if not l.get("validation")][3:]  # skip warm-up steps

    def med(key):
        return statistics.median(l[key] for l in train)

    data, fb, opt, loop = med("time_data_s"), med("time_fwd_bwd_s"), med("time_optimizer_s"), med("time_loop_overhead_s")
    step = data + fb + opt + loop

    # Bare loop: same model/optimizer, batches fetched up front, nothing else.
    from megatron_slm.training.batches import StepSampler, make_loader

    t = cfg.train
    fresh = iter(make_loader(trainer.train_ds, StepSampler(t.global_batch_size, 0, t.micro_batch_size,
                                                           t.global_batch_size, 0, 1), 0))
    batches = trainer._device_batches(fresh, trainer.plan.num_microbatches)
    bare = []
    for _ in range(len(train)):
        t0 = time.perf_counter()
        for m in trainer.ddp_models:
            m.zero_grad_buffer()
        trainer.optimizer.zero_grad()
        trainer._run_schedule(batches, forward_only=False)
        trainer.optimizer.step()
        bare.append(time.perf_counter() - t0)
    bare_step = statistics.median(bare)

    print(f"median over {len(train)} steps (tiny Llama 4L h256, seq 256, global batch {cfg.train.global_batch_size}, CPU)")
    for name, value in (("data wait", data), ("forward-backward", fb), ("optimizer", opt), ("logging/checks", loop)):
        print(f"  {name:17s} {value * 1e3:8.2f} ms  {100 * value / step:5.1f}%")
    print(f"  {'our step':17s} {step * 1e3:8.2f} ms")
    print(f"  {'bare step':17s} {bare_step * 1e3:8.2f} ms")
    print(f"overhead outside fwd-bwd + optimizer: {100 * (data + loop) / step:.2f}% of the step (target < 5%)")
    print(f"ratio our step / bare Megatron step: {step / bare_step:.3f}")


if __name__ == "__main__":
    main()
