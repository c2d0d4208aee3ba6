#!/usr/bin/env python
"""Generate the SIMS recipes (examples/configs/sims_<model>_<gpu>.yaml) and docs/recipes.md.  (`--help` for the rest; the body is megatron_slm/commands/make_recipes.py)"""
import sys

from megatron_slm.commands.make_recipes import main

if __name__ == "__main__":
    sys.exit(main())
