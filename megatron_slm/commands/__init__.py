"""The bodies of the command-line tools: one module per command, each with `main(argv=None) -> int`.

`tools/<name>.py` and the console scripts declared in setup.py (`slm-<name>`) are thin wrappers
around these; `unit_args.py` holds the argument groups the unit commands share. A command module imports only the standard library at import time and defers
torch, transformers and Megatron-Core until after argument parsing, so `--help` is instant.
"""
from megatron_slm.console import quiet_known_warnings

quiet_known_warnings()  # once, when any command starts
