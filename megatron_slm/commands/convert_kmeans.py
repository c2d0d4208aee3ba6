"""Convert a trusted pickled k-means (a scikit-learn KMeans saved with pickle/joblib, e.g. the
TWIST km500 `.bin`) to a `.npy` of its [K, D] float32 centroids, once.

Unpickling runs any code the file holds, so the tools refuse pickles unless given
--trust-pickle; after this conversion they read the .npy without that risk. The centroids are
copied exactly: the codebook hash in units sidecars, and so the units' identity, does not change.

Example:
  python tools/convert_kmeans.py --trust-pickle km500.bin km500.npy
"""
from __future__ import annotations

import argparse
import os
import sys

from megatron_slm.console import error


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pickle", help="the pickled k-means (.bin/.pkl/.joblib)")
    p.add_argument("out", help="output .npy")
    p.add_argument("--trust-pickle", action="store_true",
                   help="required: you vouch that the file is safe to unpickle (it runs any code it holds)")
    p.add_argument("--force", action="store_true", help="replace an existing output file")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import numpy as np

    from megatron_slm.units.kmeans import centroids_sha256, load_centroids

    try:
        if not args.out.endswith(".npy"):
            raise ValueError(f"output {args.out!r} must end in .npy")
        if os.path.exists(args.out) and os.path.samefile(args.out, args.pickle):
            raise ValueError(f"refusing to write {args.out}: it is the input")
        if os.path.exists(args.out) and not args.force:
            raise ValueError(f"{args.out} exists (pass --force to replace it)")
        if args.pickle.endswith(".npy"):
            raise ValueError(f"{args.pickle} is already a .npy: nothing to convert")
        centroids = load_centroids(args.pickle, trust_pickle=args.trust_pickle)
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        tmp = args.out + ".tmp.npy"
        np.save(tmp, centroids)
        os.replace(tmp, args.out)
    except (OSError, ValueError) as e:
        error(e)
        return 2
    print(f"wrote {args.out}: {centroids.shape[0]} centroids of dimension {centroids.shape[1]} "
          f"(sha256 {centroids_sha256(centroids)[:16]}..., the same codebook identity as {args.pickle})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
