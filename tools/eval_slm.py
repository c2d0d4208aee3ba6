#!/usr/bin/env python
"""Score spoken-LM benchmarks (sWUGGY, sBLIMP, sSC, tSC, SALMon, cross-modal StoryCloze, ...)  (`--help` for the rest; the body is megatron_slm/commands/eval_slm.py)"""
import sys

from megatron_slm.commands.eval_slm import main

if __name__ == "__main__":
    sys.exit(main())
