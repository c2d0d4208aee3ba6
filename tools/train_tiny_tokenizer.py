#!/usr/bin/env python
"""Train the tiny byte-level BPE tokenizer that stands in for the Llama tokenizer in tests and demos.  (`--help` for the rest; the body is megatron_slm/commands/train_tiny_tokenizer.py)"""
import sys

from megatron_slm.commands.train_tiny_tokenizer import main

if __name__ == "__main__":
    sys.exit(main())
