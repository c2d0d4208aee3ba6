"""GPU DALI path: decode on CPU, resample on the device, batch lands in CUDA memory."""
import os

import numpy as np
import pytest
import torch

from megatron_slm.audio.decode_dali import HAVE_DALI
from megatron_slm.audio.decode_soundfile import load_audio
from megatron_slm.audio.loader import AudioLoader
from megatron_slm.audio.probe import probe
from megatron_slm.units.pipeline import UnitExtractor

from conftest import CORPUS


pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
              pytest.mark.skipif(not HAVE_DALI, reason="nvidia-dali not installed")]


def test_dali_gpu_resampling_matches_cpu(tmp_path):
    import soundfile as sf
    from scipy.signal import resample_poly

    src = load_audio(os.path.join(CORPUS, "audio", "s02_01.flac"))
    paths = []
    for rate in (22050, 44100, 16000):
        g = np.gcd(rate, 16000)
        p = str(tmp_path / f"x{rate}.wav")
        sf.write(p, resample_poly(src, rate // g, 16000 // g).astype(np.float32), rate)
        paths.append(p)
    items, _ = probe(paths)
    batches = list(AudioLoader("dali", device="cuda", max_batch_seconds=60).batches(items))
    assert all(b.waves.is_cuda and b.lengths.is_cuda for b in batches)
    for b in batches:
        for i, it in enumerate(b.items):
            got = b.waves[i, : b.lengths[i]].cpu().numpy()
            ref = load_audio(it.path)
            assert abs(got.size - ref.size) <= 1
            n = min(got.size, ref.size)
            assert np.sqrt(((got[:n] - ref[:n]) ** 2).mean() / (ref[:n] ** 2).mean()) < 0.02


def test_units_on_gpu_match_cpu():
    km = os.path.join(CORPUS, "km_mel100.npy")
    paths = [os.path.join(CORPUS, "audio", f"s04_0{i}.flac") for i in range(1, 5)]
    gpu = {r.id: r for r in UnitExtractor.from_args("mel", km, device="cuda", audio_backend="dali").units_for_files(paths)}
    cpu = {r.id: r for r in UnitExtractor.from_args("mel", km, device="cpu", audio_backend="dali").units_for_files(paths)}
    assert set(gpu) == set(cpu) and len(gpu) == 4
    for k in gpu:
        a, b = np.repeat(gpu[k].units, gpu[k].durations), np.repeat(cpu[k].units, cpu[k].durations)
        assert a.size == b.size and (a == b).mean() > 0.98  # float differences may flip rare near-ties
