#!/usr/bin/env python
"""Convert checkpoints between Hugging Face and megatron-slm (Megatron-Core dist checkpoints).  (`--help` for the rest; the body is megatron_slm/commands/convert_checkpoint.py)"""
import sys

from megatron_slm.commands.convert_checkpoint import main

if __name__ == "__main__":
    sys.exit(main())
