#!/usr/bin/env python
"""Generate docs/config.md, the configuration reference, from the typed schema (megatron_slm/config.py).  (`--help` for the rest; the body is megatron_slm/commands/gen_config_docs.py)"""
import sys

from megatron_slm.commands.gen_config_docs import main

if __name__ == "__main__":
    sys.exit(main())
