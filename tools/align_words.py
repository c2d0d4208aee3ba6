#!/usr/bin/env python
"""Align transcripts to their audio word by word (CTC forced alignment)  (`--help` for the rest; the body is megatron_slm/commands/align_words.py)"""
import sys

from megatron_slm.commands.align_words import main

if __name__ == "__main__":
    sys.exit(main())
