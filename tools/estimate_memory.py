#!/usr/bin/env python
"""Estimate the GPU memory a training config needs, per pipeline stage, before booking GPUs.  (`--help` for the rest; the body is megatron_slm/commands/estimate_memory.py)"""
import sys

from megatron_slm.commands.estimate_memory import main

if __name__ == "__main__":
    sys.exit(main())
