#!/usr/bin/env python
"""Launch a training run with torchrun on this machine or on a SLURM allocation.  (`--help` for the rest; the body is megatron_slm/commands/launch.py)"""
import sys

from megatron_slm.commands.launch import main

if __name__ == "__main__":
    sys.exit(main())
