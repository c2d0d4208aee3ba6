"""extract_units --compat slamkit gives SlamKit's units: a random mhubert-25Hz-shaped HubertModel
and a pickled scikit-learn KMeans, against a reference that pads each waveform with 40 zero
samples on both sides and takes hidden_states[L] of the whole model, frame for frame, at batch
size 1 and batched."""
import json
import os
import pickle

import numpy as np
import pytest
import soundfile as sf
import torch

from megatron_slm.commands import extract_units
from megatron_slm.units.records import dedup, iter_records, read_meta
from test_units_extractors import tiny_mhubert_25hz

LAYER = 2
SECONDS = (0.37, 0.81, 1.0, 1.73, 2.9, 4.06)


def _audio(n, rng):
    """Noise with a slow envelope, so frames differ and units change."""
    t = np.arange(n) / 16000
    return (rng.normal(0, 0.1, n) * (1 + np.sin(2 * np.pi * 1.3 * t))).astype(np.float32)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from sklearn.cluster import KMeans

    root = tmp_path_factory.mktemp("units_slamkit")
    model = tiny_mhubert_25hz()
    model.save_pretrained(root / "mhubert")
    rng = np.random.default_rng(0)
    (root / "audio").mkdir()
    for i, s in enumerate(SECONDS):
        sf.write(root / "audio" / f"u{i}.wav", _audio(int(s * 16000), rng), 16000, subtype="FLOAT")
    with torch.no_grad():  # fit the codebook on padded features, as SlamKit's k-means would be
        feats = torch.cat([model(torch.nn.functional.pad(torch.from_numpy(_audio(32000, rng))[None], (40, 40)),
                                 output_hidden_states=True).hidden_states[LAYER][0] for _ in range(4)])
    km = KMeans(n_clusters=16, n_init=2, random_state=0).fit(feats.numpy())
    with open(root / "km.pkl", "wb") as f:
        pickle.dump(km, f)
    return root, model, km


def reference_units(model, km, path, padding):
    """SlamKit's extraction of one file: F.pad(wav, (p, p)) -> hidden_states[L] -> predict -> runs."""
    wav, sr = sf.read(path, dtype="float32")
    assert sr == 16000
    with torch.no_grad():
        x = torch.nn.functional.pad(torch.from_numpy(wav)[None], (padding, padding))
        h = model(x, output_hidden_states=True).hidden_states[LAYER][0].numpy()
    frames = km.predict(h)
    units, durations = dedup(frames)
    return units, durations, len(frames)


def _extract(root, out, *extra):
    rc = extract_units.main(["--audio-dir", str(root / "audio"), "--extractor", "hubert", "--model-dir",
                             str(root / "mhubert"), "--layer", str(LAYER), "--kmeans", str(root / "km.pkl"), "--trust-pickle",
                             "--out", str(out), "--dtype", "float32", "--audio-backend", "soundfile", *extra])
    assert rc == 0
    return {r.id: r for r in iter_records(out)}


@pytest.mark.parametrize("batching", [["--max-batch-seconds", "0.1"], ["--max-batch-seconds", "60", "--streams", "1"]],
                         ids=["batch1", "batched"])
def test_slamkit_units_equal_the_padded_reference(setup, tmp_path, batching):
    root, model, km = setup
    recs = _extract(root, tmp_path / "u.jsonl", "--compat", "slamkit", *batching)
    assert len(recs) == len(SECONDS)
    for i in range(len(SECONDS)):
        units, durations, frames = reference_units(model, km, root / "audio" / f"u{i}.wav", 40)
        r = recs[f"u{i}"]
        assert (r.units, r.durations, r.num_frames) == (units, durations, frames), f"u{i}"
    meta = read_meta(tmp_path / "u.jsonl")
    assert meta["compat"] == "slamkit" and meta["extractor"]["input_padding"] == 40


def test_unpadded_units_differ_and_never_mix(setup, tmp_path, capsys):
    root, model, km = setup
    none = _extract(root, tmp_path / "n.jsonl", "--compat", "none")
    meta = read_meta(tmp_path / "n.jsonl")
    assert meta["compat"] == "none" and "input_padding" not in meta["extractor"]
    same = total = 0
    for i in range(len(SECONDS)):
        path = root / "audio" / f"u{i}.wav"
        u, d, n = reference_units(model, km, path, 0)
        assert (none[f"u{i}"].units, none[f"u{i}"].durations) == (u, d)  # none = the unpadded forward
        a = np.repeat(u, d)
        b = np.repeat(*reference_units(model, km, path, 40)[:2])
        m = min(len(a), len(b))
        same += int((a[:m] == b[:m]).sum())
        total += m
    assert same < 0.9 * total  # padding changes the units
    # appending units of the other convention to an existing file is refused
    rc = extract_units.main(["--audio-dir", str(root / "audio"), "--extractor", "hubert", "--model-dir",
                             str(root / "mhubert"), "--layer", str(LAYER), "--kmeans", str(root / "km.pkl"), "--trust-pickle",
                             "--out", str(tmp_path / "n.jsonl"), "--compat", "slamkit", "--dtype", "float32"])
    assert rc == 2 and "different extractor" in capsys.readouterr().err
    assert json.loads((tmp_path / "n.jsonl.meta.json").read_text())["compat"] == "none"
    assert os.path.getsize(tmp_path / "n.jsonl") > 0
