"""k-means: torch assignment vs numpy brute force, .npy vs pickled sklearn, training quality, dedup;
non-finite audio, features and codebooks refused; pickles only when trusted."""
import pickle
import shutil
from pathlib import Path

import joblib
import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans

from megatron_slm.units.kmeans import (KMeansAssigner, centroids_sha256, inertia, load_centroids,
                                       train_minibatch_kmeans)
from megatron_slm.units.records import dedup, expand, make_record, parse_record

from conftest import CORPUS

KM = CORPUS / "km_mel100.npy"


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


def test_train_kmeans_skips_nan_audio_and_refuses_non_finite_features(bad_audio, tmp_path, capsys):
    from megatron_slm.commands import train_kmeans

    def run(*names, out):
        d = tmp_path / out
        d.mkdir()
        for n in names:
            shutil.copy(bad_audio / n, d)
        return train_kmeans.main(["--audio-dir", str(d), "--extractor", "mel", "--k", "4", "--steps", "10",
                                  "--batch-size", "64", "--out", str(tmp_path / f"{out}.npy")])

    # before: NaN centroids written, exit 0, "inertia nan"
    assert run("good.wav", "nan.wav", "silent.wav", out="a") == 0
    printed = capsys.readouterr().out
    assert np.isfinite(np.load(tmp_path / "a.npy")).all() and "inertia nan" not in printed
    assert "skipped 1 files (1 x non-finite samples)" in printed and "warnings 1 (1 x silent)" in printed
    # finite samples, non-finite log-mel: refused, naming the file, nothing written
    assert run("good.wav", "loud.wav", out="b") == 1
    err = capsys.readouterr().err
    assert "non-finite features from 1 file(s)" in err and "loud.wav" in err
    assert not (tmp_path / "b.npy").exists()


def test_non_finite_codebooks_and_features_are_refused(tmp_path):
    import torch

    from megatron_slm.commands import extract_units
    from megatron_slm.units.kmeans import load_centroids, train_minibatch_kmeans

    c = np.load(KM)
    c[3, 1] = np.nan
    np.save(tmp_path / "nan_km.npy", c)
    with pytest.raises(ValueError, match=r"nan_km.npy: 1 of 100 centroids are not finite \(first: centroid 3\)"):
        load_centroids(tmp_path / "nan_km.npy")
    x = torch.randn(500, 8)
    x[7, 2] = float("inf")
    with pytest.raises(ValueError, match="1 of 500 feature frames are not finite"):
        train_minibatch_kmeans(x, 4, steps=2)
    # before: every frame of every file became unit 0
    rc = extract_units.main(["--alignments", str(CORPUS / "alignments.jsonl"), "--kmeans", str(tmp_path / "nan_km.npy"),
                             "--out", str(tmp_path / "u.jsonl")])
    assert rc == 2 and not (tmp_path / "u.jsonl").exists()


class _Payload:
    """A pickle that runs code when loaded (what a hostile km500.bin can do)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "ran"))


def test_pickled_kmeans_is_refused_unless_trusted_and_converts_once_to_npy(tmp_path, capsys):
    import joblib
    from sklearn.cluster import KMeans

    from megatron_slm.commands import convert_kmeans, extract_units
    from megatron_slm.units.kmeans import PickleRefused, centroids_sha256, load_centroids

    marker = tmp_path / "ran.txt"
    with open(tmp_path / "evil.bin", "wb") as f:
        pickle.dump(_Payload(str(marker)), f)
    with pytest.raises(PickleRefused, match=r"evil.bin: a pickled k-means.*convert_kmeans.py --trust-pickle"):
        load_centroids(tmp_path / "evil.bin")
    rc = extract_units.main(["--alignments", str(CORPUS / "alignments.jsonl"), "--kmeans", str(tmp_path / "evil.bin"),
                             "--out", str(tmp_path / "u.jsonl")])
    assert rc == 2 and "--trust-pickle" in capsys.readouterr().err
    assert convert_kmeans.main([str(tmp_path / "evil.bin"), str(tmp_path / "evil.npy")]) == 2
    assert not marker.exists()  # nothing was unpickled
    with pytest.raises(ValueError):  # trusted, it runs -- which is why trust is explicit
        load_centroids(tmp_path / "evil.bin", trust_pickle=True)
    assert marker.read_text() == "ran"

    km = KMeans(n_clusters=5, n_init=1, random_state=0).fit(np.random.default_rng(0).normal(size=(200, 40)))
    joblib.dump(km, tmp_path / "km.bin")  # the TWIST format
    assert convert_kmeans.main(["--trust-pickle", str(tmp_path / "km.bin"), str(tmp_path / "km.npy")]) == 0
    assert centroids_sha256(load_centroids(tmp_path / "km.npy")) == \
        centroids_sha256(load_centroids(tmp_path / "km.bin", trust_pickle=True))
    assert "same codebook identity" in capsys.readouterr().out
    assert convert_kmeans.main(["--trust-pickle", str(tmp_path / "km.bin"), str(tmp_path / "km.npy")]) == 2  # exists
    from megatron_slm.commands.prepare_eval_data import parse_args

    assert parse_args(["ssc", "--src", "x", "--out", "y", "--kmeans", "km.bin", "--trust-pickle"]).trust_pickle
