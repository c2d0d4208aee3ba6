#!/usr/bin/env python
"""Scaling analysis of interleaved SLMs: plan an isoFLOP sweep, collect runs, fit laws, plot.  (`--help` for the rest; the body is megatron_slm/commands/scaling.py)"""
import sys

from megatron_slm.commands.scaling import main

if __name__ == "__main__":
    sys.exit(main())
