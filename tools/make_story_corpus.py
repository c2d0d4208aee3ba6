#!/usr/bin/env python
"""Make a synthetic spoken story corpus offline and deterministically (espeak-ng, exact word alignments).  (`--help` for the rest; the body is megatron_slm/commands/make_story_corpus.py)"""
import sys

from megatron_slm.commands.make_story_corpus import main

if __name__ == "__main__":
    sys.exit(main())
