#!/usr/bin/env python
"""Launch training with torchrun, on this machine or across the nodes of a SLURM job.

See megatron_slm/launch.py (and docs/slurm.md) for the details; `--help` lists the options.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from megatron_slm.launch import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
