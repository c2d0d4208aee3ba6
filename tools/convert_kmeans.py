#!/usr/bin/env python
"""Convert a trusted pickled k-means (e.g. TWIST km500.bin) to .npy centroids, once  (`--help` for the rest; the body is megatron_slm/commands/convert_kmeans.py)"""
import sys

from megatron_slm.commands.convert_kmeans import main

if __name__ == "__main__":
    sys.exit(main())
