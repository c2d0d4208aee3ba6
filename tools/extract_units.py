#!/usr/bin/env python
"""Turn audio into discrete speech units (features -> nearest k-means centroid -> optional  (`--help` for the rest; the body is megatron_slm/commands/extract_units.py)"""
import sys

from megatron_slm.commands.extract_units import main

if __name__ == "__main__":
    sys.exit(main())
