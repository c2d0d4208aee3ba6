"""Train an interleaved speech-text LM on Megatron-Core (the body is megatron_slm/train.py).

    torchrun --nproc_per_node=4 pretrain_slm.py --config examples/configs/tiny_cpu.yaml parallel.tp=2
"""
from megatron_slm.train import main

if __name__ == "__main__":  # dist-checkpoint writers spawn processes: keep this guard
    main()
