#!/usr/bin/env python
"""Turn a spoken-LM benchmark folder into a scored-item JSONL for tools/eval_slm.py.  (`--help` for the rest; the body is megatron_slm/commands/prepare_eval_data.py)"""
import sys

from megatron_slm.commands.prepare_eval_data import main

if __name__ == "__main__":
    sys.exit(main())
