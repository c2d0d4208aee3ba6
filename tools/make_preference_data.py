#!/usr/bin/env python
"""Preference pairs (true vs another story's ending) from a spoken story corpus's train split.  (`--help` for the rest; the body is megatron_slm/commands/make_preference_data.py)"""
import sys

from megatron_slm.commands.make_preference_data import main

if __name__ == "__main__":
    sys.exit(main())
