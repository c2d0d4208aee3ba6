"""Train an interleaved speech-text LM on Megatron-Core.

    torchrun --nproc_per_node=4 pretrain_slm.py --config examples/configs/tiny_cpu.yaml parallel.tp=2

Everything after --config is a dotted override (section.key=value); see docs/config.md.
"""
from megatron_slm.training import preemption

preemption.install()  # before the heavy imports: a preemption signal during start-up is not fatal

from megatron_slm.cli import run_main  # noqa: E402


def main(cfg):
    from megatron_slm.training.trainer import Trainer

    Trainer(cfg).run()


if __name__ == "__main__":  # dist-checkpoint writers spawn processes: keep this guard
    run_main(main, description=__doc__)
