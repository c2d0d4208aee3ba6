#!/usr/bin/env python
"""Generate speech or text continuations from an HF model or a Megatron checkpoint  (`--help` for the rest; the body is megatron_slm/commands/generate.py)"""
import sys

from megatron_slm.commands.generate import main

if __name__ == "__main__":
    sys.exit(main())
