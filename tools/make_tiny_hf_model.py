#!/usr/bin/env python
"""Write a tiny random Hugging Face causal LM: the stand-in base model of the CPU demo.  (`--help` for the rest; the body is megatron_slm/commands/make_tiny_hf_model.py)"""
import sys

from megatron_slm.commands.make_tiny_hf_model import main

if __name__ == "__main__":
    sys.exit(main())
