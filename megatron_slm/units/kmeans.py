"""k-means for speech units: load centroids (.npy, or -- only when trusted -- a pickled
scikit-learn KMeans such as the released TWIST km500 file), assign frames to the nearest centroid
in torch (batched, on the extractor's device), and train new centroids with mini-batch k-means
and k-means++ init.

A pickle runs whatever code it holds when it is loaded, so `load_centroids` refuses one unless
the caller passes `trust_pickle=True` (the tools' --trust-pickle); `tools/convert_kmeans.py`
turns a trusted pickle into a `.npy` once (the codebook hash, and so the units' identity, stays
the same). Centroids and training features must be finite: one NaN frame would make every
centroid it touches NaN, and every frame's nearest centroid unit 0.
"""
from __future__ import annotations

import hashlib
import os
import pickle
from typing import Iterable

import numpy as np
import torch


class PickleRefused(ValueError):
    """A pickled k-means given without --trust-pickle."""


def load_centroids(path: str | os.PathLike, trust_pickle: bool = False) -> np.ndarray:
    """[K, D] float32 centroids from `.npy`, or from a pickled/joblib'd object with
    `cluster_centers_` when `trust_pickle` (else PickleRefused). Non-finite centroids are refused."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"k-means file {path!r} not found")
    if path.endswith(".npy"):
        try:
            c = np.load(path, allow_pickle=False)
        except ValueError as e:  # an object array (a pickle inside the .npy) or a corrupt file
            raise ValueError(f"{path}: not a numeric .npy array ({e})") from None
    else:
        if not trust_pickle:
            raise PickleRefused(
                f"{path}: a pickled k-means; loading a pickle runs any code it holds, so it is refused by default. "
                f"If you trust the file, convert it once (tools/convert_kmeans.py --trust-pickle {path} "
                f"{os.path.splitext(path)[0]}.npy) and use the .npy, or pass --trust-pickle")
        obj = _unpickle(path)
        if not hasattr(obj, "cluster_centers_"):
            raise ValueError(f"{path}: unpickled a {type(obj).__name__}, expected a fitted sklearn KMeans (cluster_centers_)")
        c = np.asarray(obj.cluster_centers_)
    if c.ndim != 2 or c.shape[0] < 1 or not np.issubdtype(c.dtype, np.number):
        raise ValueError(f"{path}: centroids must be a numeric [K, D] array, got {c.dtype} of shape {c.shape}")
    c = np.ascontiguousarray(c, dtype=np.float32)
    bad = np.flatnonzero(~np.isfinite(c).all(1))
    if bad.size:
        raise ValueError(f"{path}: {bad.size} of {c.shape[0]} centroids are not finite (first: centroid {bad[0]}); "
                         f"units from this codebook would be meaningless -- retrain it")
    return c


def _unpickle(path: str):
    try:
        import joblib  # the TWIST/textlesslib files are joblib dumps; joblib also reads plain pickles

        return joblib.load(path)
    except ImportError:
        with open(path, "rb") as f:
            return pickle.load(f)
    except Exception as e:
        raise ValueError(f"{path}: not a .npy array nor a loadable pickled KMeans ({type(e).__name__}: {e})") from None


def centroids_sha256(centroids: np.ndarray) -> str:
    """Identity of a codebook: hash of its float32 values (same for .npy and the pickle)."""
    return hashlib.sha256(np.ascontiguousarray(centroids, dtype=np.float32).tobytes()).hexdigest()


class KMeansAssigner:
    """Nearest-centroid assignment: argmin ||x - c||^2 = argmin (||c||^2 - 2 x·c), in chunks."""

    def __init__(self, centroids: np.ndarray | torch.Tensor, device: str | torch.device = "cpu", chunk: int = 16384):
        self.centroids = torch.as_tensor(np.asarray(centroids, dtype=np.float32)).to(device)
        self.c_sq = (self.centroids ** 2).sum(1)
        self.k, self.dim = self.centroids.shape
        self.chunk = chunk

    @torch.no_grad()
    def __call__(self, feats: torch.Tensor) -> torch.Tensor:
        """[..., D] features -> [...] int64 unit ids."""
        if feats.shape[-1] != self.dim:
            raise ValueError(f"features have dimension {feats.shape[-1]} but the k-means centroids have {self.dim}")
        flat = feats.reshape(-1, self.dim).to(self.centroids.device, torch.float32)
        out = torch.empty(flat.shape[0], dtype=torch.int64, device=flat.device)
        for s in range(0, flat.shape[0], self.chunk):
            x = flat[s:s + self.chunk]
            out[s:s + self.chunk] = (self.c_sq[None] - 2.0 * x @ self.centroids.T).argmin(1)
        return out.reshape(feats.shape[:-1])


def inertia(feats: torch.Tensor, centroids: np.ndarray | torch.Tensor) -> float:
    """Mean squared distance of each frame to its nearest centroid."""
    c = torch.as_tensor(np.asarray(centroids, dtype=np.float32))
    x = feats.reshape(-1, c.shape[1]).float().cpu()
    ids = KMeansAssigner(c)(x)
    return float(((x - c[ids]) ** 2).sum(1).mean())


def kmeans_plus_plus(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding (D^2 sampling) on [N, D] features."""
    n = x.shape[0]
    if n < k:
        raise ValueError(f"need at least k={k} feature frames to initialise k-means, got {n}")
    centers = [x[torch.randint(n, (1,), generator=generator)].squeeze(0)]
    d2 = ((x - centers[0]) ** 2).sum(1)
    for _ in range(1, k):
        probs = d2 / d2.sum() if d2.sum() > 0 else torch.full_like(d2, 1.0 / n)
        idx = torch.multinomial(probs, 1, generator=generator)
        centers.append(x[idx].squeeze(0))
        d2 = torch.minimum(d2, ((x - centers[-1]) ** 2).sum(1))
    return torch.stack(centers)


def train_minibatch_kmeans(feats: torch.Tensor, k: int, batch_size: int = 4096, steps: int = 200,
                           init_size: int | None = None, seed: int = 0, progress: bool = False) -> np.ndarray:
    """Mini-batch k-means (Sculley 2010): per-centroid learning rate 1/count, k-means++ init on
    a random subset of `init_size` frames (default 3k, the scikit-learn choice). Non-finite
    features or centroids raise ValueError (the caller names the files)."""
    x = feats.reshape(-1, feats.shape[-1]).float()
    if not torch.isfinite(x).all():
        raise ValueError(f"{int((~torch.isfinite(x).all(1)).sum())} of {x.shape[0]} feature frames are not finite")
    g = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    init_idx = torch.randperm(n, generator=g)[: min(n, init_size or 3 * k)]
    centers = kmeans_plus_plus(x[init_idx], k, g).clone()
    counts = torch.zeros(k)
    assign = KMeansAssigner(centers)
    steps_iter: Iterable[int] = range(steps)
    if progress:
        from tqdm import tqdm

        steps_iter = tqdm(steps_iter, desc="k-means", unit="step")
    for _ in steps_iter:
        batch = x[torch.randint(n, (min(batch_size, n),), generator=g)]
        ids = assign(batch)
        sums = torch.zeros_like(centers).index_add_(0, ids, batch)
        hits = torch.bincount(ids, minlength=k).float()
        counts += hits
        seen = hits > 0
        # c <- c + (hits/count) * (mean_of_batch_members - c): the per-sample 1/count rule in one step
        lr = (hits[seen] / counts[seen])[:, None]
        centers[seen] += lr * (sums[seen] / hits[seen][:, None] - centers[seen])
        assign = KMeansAssigner(centers)
    if not torch.isfinite(centers).all():  # finite features that overflow float32 sums
        raise ValueError(f"{int((~torch.isfinite(centers).all(1)).sum())} of {k} trained centroids are not finite")
    return centers.numpy().astype(np.float32)
