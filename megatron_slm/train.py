"""Train an interleaved speech-text LM on Megatron-Core.

    torchrun --nproc_per_node=4 -m megatron_slm.train --config examples/configs/tiny_cpu.yaml parallel.tp=2
    python -m megatron_slm.train --config tiny_cpu.yaml train.iters=2         # one process

Everything after --config is a dotted override (section.key=value); see docs/config.md.
"""
from megatron_slm.training import preemption

preemption.install()  # before the heavy imports: a preemption signal during start-up is not fatal

from megatron_slm.cli import run_main  # noqa: E402
from megatron_slm.console import quiet_known_warnings  # noqa: E402

quiet_known_warnings()


def train(cfg) -> None:
    from megatron_slm.training.trainer import Trainer

    Trainer(cfg).run()


def main(argv=None) -> None:
    run_main(train, argv, description=__doc__)


if __name__ == "__main__":  # dist-checkpoint writers spawn processes: keep this guard
    main()
