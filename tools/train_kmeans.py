#!/usr/bin/env python
"""Train k-means centroids for speech units (mini-batch k-means, k-means++ init) on features  (`--help` for the rest; the body is megatron_slm/commands/train_kmeans.py)"""
import sys

from megatron_slm.commands.train_kmeans import main

if __name__ == "__main__":
    sys.exit(main())
