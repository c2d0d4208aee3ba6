#!/usr/bin/env python
"""Synthesise a speech corpus with exact word alignments from a text file (espeak-ng).  (`--help` for the rest; the body is megatron_slm/commands/synthesize_corpus.py)"""
import sys

from megatron_slm.commands.synthesize_corpus import main

if __name__ == "__main__":
    sys.exit(main())
