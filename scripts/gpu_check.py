#!/usr/bin/env python
"""Install from an offline wheelhouse, then check the GPU paths and measure the GPU figures on a node
(docs/gpu.md; the package is scripts/gpucheck/). `--help` lists the steps and options."""
import sys

from gpucheck.cli import main

if __name__ == "__main__":
    sys.exit(main())
