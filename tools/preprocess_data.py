#!/usr/bin/env python
"""Build Megatron indexed datasets (.bin/.idx + <prefix>.meta.json) for speech-text LM training.  (`--help` for the rest; the body is megatron_slm/commands/preprocess_data.py)"""
import sys

from megatron_slm.commands.preprocess_data import main

if __name__ == "__main__":
    sys.exit(main())
