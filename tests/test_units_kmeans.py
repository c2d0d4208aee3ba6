"""k-means: torch assignment vs numpy brute force, .npy vs pickled sklearn, training quality, dedup."""
import pickle

import joblib
import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans

from megatron_slm.units.kmeans import (KMeansAssigner, centroids_sha256, inertia, load_centroids,
                                       train_minibatch_kmeans)
from megatron_slm.units.records import dedup, expand, make_record, parse_record


def test_assignment_equals_numpy_bruteforce():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5000, 16)).astype(np.float32)
    c = rng.normal(size=(50, 16)).astype(np.float32)
    ref = ((x[:, None, :].astype(np.float64) - c[None].astype(np.float64)) ** 2).sum(-1).argmin(1)
    got = KMeansAssigner(c, chunk=777)(torch.from_numpy(x).reshape(50, 100, 16))  # odd chunk, 3-d input
    assert got.shape == (50, 100)
    np.testing.assert_array_equal(got.reshape(-1).numpy(), ref)


def test_pickled_sklearn_and_npy_give_identical_units(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2000, 8)).astype(np.float32)
    km = KMeans(n_clusters=20, n_init=1, random_state=0).fit(x)
    joblib.dump(km, tmp_path / "km.bin")  # how TWIST/textlesslib ship km500
    with open(tmp_path / "km.pkl", "wb") as f:
        pickle.dump(km, f)
    np.save(tmp_path / "km.npy", km.cluster_centers_.astype(np.float32))
    cs = [load_centroids(tmp_path / n, trust_pickle=n != "km.npy") for n in ("km.bin", "km.pkl", "km.npy")]
    assert len({centroids_sha256(c) for c in cs}) == 1
    q = rng.normal(size=(3000, 8)).astype(np.float32)
    units = [KMeansAssigner(c)(torch.from_numpy(q)).numpy() for c in cs]
    np.testing.assert_array_equal(units[0], units[2])
    np.testing.assert_array_equal(units[1], units[2])
    np.testing.assert_array_equal(units[0], km.predict(q))


def test_load_centroids_rejects_bad_files(tmp_path):
    with open(tmp_path / "x.pkl", "wb") as f:
        pickle.dump({"not": "kmeans"}, f)
    with pytest.raises(ValueError, match="x.pkl.*cluster_centers_"):
        load_centroids(tmp_path / "x.pkl", trust_pickle=True)
    np.save(tmp_path / "v.npy", np.zeros(5))
    with pytest.raises(ValueError, match=r"v.npy.*\[K, D\]"):
        load_centroids(tmp_path / "v.npy")
    with pytest.raises(FileNotFoundError, match="missing.npy"):
        load_centroids(tmp_path / "missing.npy")
    with pytest.raises(ValueError, match="dimension 3"):
        KMeansAssigner(np.zeros((4, 5)))(torch.zeros(2, 3))


def test_minibatch_kmeans_beats_random_centroids_and_finds_blobs():
    g = torch.Generator().manual_seed(0)
    true = torch.randn(8, 4, generator=g) * 10
    x = (true[torch.randint(8, (8000,), generator=g)] + torch.randn(8000, 4, generator=g) * 0.3)
    c = train_minibatch_kmeans(x, 8, batch_size=512, steps=100, seed=0)
    rand = x[torch.randperm(8000, generator=g)[:8]]
    assert inertia(x, c) < 0.5 * inertia(x, rand)
    # every true blob centre has a learned centroid nearby
    d = torch.cdist(true, torch.from_numpy(c)).min(1).values
    assert float(d.max()) < 1.0


def test_dedup_roundtrip():
    rng = np.random.default_rng(2)
    for _ in range(50):
        frames = rng.integers(0, 4, size=int(rng.integers(0, 40)))
        units, durs = dedup(frames)
        assert expand(units, durs) == frames.tolist()
        assert all(a != b for a, b in zip(units, units[1:]))
        assert sum(durs) == frames.size
    assert dedup([5, 5, 7, 5]) == ([5, 7, 5], [2, 1, 1])


def test_record_roundtrip_and_validation():
    rec = make_record("u", "a.flac", np.array([3, 3, 3, 1, 1, 2]), 0.04, 0.25)
    assert (rec.units, rec.durations, rec.num_frames) == ([3, 1, 2], [3, 2, 1], 6)
    assert rec.unit_times()[1] == pytest.approx((0.12, 0.2))
    assert parse_record(__import__("json").loads(rec.to_json()), "f:1") == rec
    flat = make_record("u", "a.flac", np.array([3, 3, 1]), 0.04, 0.12, collapse=False)
    assert (flat.units, flat.durations) == ([3, 3, 1], [1, 1, 1])
    bad = dict(__import__("dataclasses").asdict(rec), num_frames=7)
    with pytest.raises(ValueError, match="f:3: field 'num_frames'"):
        parse_record(bad, "f:3")
