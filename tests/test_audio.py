"""Audio loading: DALI CPU pipeline vs scipy reference vs the soundfile fallback; probing; bucketing;
non-finite, truncated and silent audio; which files a directory or a file list yields."""
import argparse
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from megatron_slm.audio.decode_dali import HAVE_DALI
from megatron_slm.audio.decode_soundfile import load_audio
from megatron_slm.audio.loader import AudioLoader, bucket_batches
from megatron_slm.audio.probe import AudioItem, probe
from megatron_slm.audio.sources import AudioSource, list_audio_files

from conftest import CORPUS, SR

SRC = os.path.join(CORPUS, "audio", "s01_01.flac")
needs_dali = pytest.mark.skipif(not HAVE_DALI, reason="nvidia-dali not installed")


def _convert(dst: str, rate: int, channels: int) -> str:
    """Re-encode a corpus file at another rate/channel count (sox when present, else soundfile)."""
    if shutil.which("sox"):
        subprocess.run(["sox", SRC, "-r", str(rate), "-c", str(channels), dst], check=True)
    else:
        import soundfile as sf
        from scipy.signal import resample_poly

        g = np.gcd(rate, 16000)
        x = resample_poly(load_audio(SRC), rate // g, 16000 // g)
        sf.write(dst, np.stack([x] * channels, 1), rate)
    return dst


@pytest.fixture(scope="module")
def formats(tmp_path_factory):
    d = tmp_path_factory.mktemp("fmt")
    return [
        _convert(str(d / "a.wav"), 22050, 1),
        _convert(str(d / "b.ogg"), 44100, 2),  # stereo: exercises the downmix
        _convert(str(d / "c.flac"), 8000, 1),
    ]


def _by_path(loader, items):
    out = {}
    for b in loader.batches(items):
        assert b.waves.dtype == torch.float32 and b.waves.shape[0] == len(b.items)
        for i, it in enumerate(b.items):
            assert torch.all(b.waves[i, b.lengths[i]:] == 0)  # padding is zeros
            out[it.path] = b.waves[i, : b.lengths[i]].numpy()
    return out


def _rel_rms(a, b):
    n = min(a.size, b.size)
    return float(np.sqrt(((a[:n] - b[:n]) ** 2).mean() / (b[:n] ** 2).mean()))


@needs_dali
def test_dali_cpu_decodes_wav_flac_ogg_and_matches_scipy(formats):
    items, skipped = probe(formats)
    assert not skipped
    dali = _by_path(AudioLoader("dali", max_batch_seconds=30), items)
    fallback = _by_path(AudioLoader("soundfile", max_batch_seconds=30), items)
    assert set(dali) == set(formats)
    for path in formats:
        ref = load_audio(path)  # soundfile decode + scipy polyphase resampling to 16 kHz
        assert abs(dali[path].size - ref.size) <= 1, path
        assert _rel_rms(dali[path], ref) < 0.02, path
        np.testing.assert_array_equal(fallback[path], ref)
        # all three came from one 16 kHz source of the same duration
        assert abs(ref.size - load_audio(SRC).size) <= 2


@needs_dali
def test_dali_matches_soundfile_on_native_16k_corpus():
    paths = sorted(os.path.join(CORPUS, "audio", f) for f in os.listdir(os.path.join(CORPUS, "audio")))[:6]
    items, _ = probe(paths)
    a = _by_path(AudioLoader("dali", max_batch_seconds=20), items)
    b = _by_path(AudioLoader("soundfile", max_batch_seconds=20), items)
    for p in paths:
        np.testing.assert_allclose(a[p], b[p], atol=1e-6)


def test_probe_skips_corrupt_empty_and_short(tmp_path):
    import soundfile as sf

    (tmp_path / "corrupt.wav").write_bytes(b"RIFF\x00\x00garbage" * 10)
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    sf.write(tmp_path / "short.wav", np.zeros(160, np.float32), 16000)
    paths = [str(tmp_path / n) for n in ("corrupt.wav", "empty.wav", "short.wav")] + [SRC]
    items, skipped = probe(paths, min_seconds=0.1)
    assert [it.path for it in items] == [SRC]
    reasons = {os.path.basename(s.path): s.reason for s in skipped}
    assert reasons["corrupt.wav"].startswith("unreadable")
    assert reasons["empty.wav"].startswith("empty")
    assert reasons["short.wav"].startswith("too short")


def test_bucket_batches_respects_budget_and_keeps_every_item():
    rng = np.random.default_rng(0)
    items = [AudioItem(f"u{i}", f"u{i}.wav", float(d)) for i, d in enumerate(rng.uniform(0.5, 20, 200))]
    items.append(AudioItem("long", "long.wav", 100.0))
    batches = bucket_batches(items, max_batch_seconds=60, max_batch_size=16)
    assert sorted(it.id for b in batches for it in b) == sorted(it.id for it in items)
    for b in batches:
        assert len(b) <= 16
        assert len(b) == 1 or len(b) * max(it.duration for it in b) <= 60
    assert [it.id for it in batches[-1]] == ["long"]


def _files(d: Path, *names: str) -> list[str]:
    return [str(d / n) for n in names]


@pytest.mark.parametrize("backend", ["dali", "soundfile"])
def test_decoding_skips_non_finite_and_truncated_audio_and_reports_silence(bad_audio, backend):
    if backend == "dali" and not HAVE_DALI:
        pytest.skip("DALI not installed")
    assert sf.info(str(bad_audio / "trunc.wav")).frames < 2 * SR  # libsndfile counts what is left
    paths = _files(bad_audio, "good.wav", "nan.wav", "inf.wav", "silent.wav", "trunc.wav", "tone.mp3")
    items, skipped = probe(paths)
    assert not skipped
    # the Lhotse paths: a span of a recording (soundfile seeks) and encoded bytes (a Shar member)
    span_nan = AudioSource(str(bad_audio / "nan.wav"), offset=0.05, duration=1.0)
    trunc = (bad_audio / "trunc.wav").read_bytes()
    held = AudioSource("shar/trunc.wav", data=lambda: trunc)
    more, skipped = probe([span_nan, held], ["span_nan", "held_trunc"])
    assert not skipped and more[1].duration == pytest.approx(2.0)
    skips, warns, kept = [], [], []
    for batch in AudioLoader(backend, "cpu", 1).batches(items + more, on_skip=skips.append, on_warn=warns.append):
        assert bool(batch.waves.isfinite().all())
        kept += [os.path.basename(it.path) for it in batch.items]
    reasons = {os.path.basename(s.path): s.reason for s in skips}
    assert sorted(kept) == ["good.wav", "silent.wav", "tone.mp3"]
    assert reasons["nan.wav"].startswith("non-finite samples (") and "NaN" in reasons["nan.wav"]
    assert reasons["inf.wav"] == "non-finite samples (0 NaN, 1 Inf)"
    assert reasons["trunc.wav"] == "truncated: the header declares 2.000 s, 0.670 s decoded"
    assert len(skips) == 5 and [s.path for s in skips].count(str(bad_audio / "nan.wav")) == 2
    assert [(os.path.basename(w.path), w.kind) for w in warns] == [("silent.wav", "silent")]


def test_one_audio_rule_for_directories_and_file_lists(bad_audio, tmp_path):
    """.mp3 was ignored by --audio-dir but decoded via --file-list; a FIFO hung the listing."""
    from megatron_slm.audio.skips import Skipped
    from megatron_slm.commands.unit_args import resolve_inputs

    d = tmp_path / "audio"
    d.mkdir()
    for n in ("good.wav", "tone.mp3"):
        shutil.copy(bad_audio / n, d)
    (d / "notes.txt").write_text("not audio")
    os.mkfifo(d / "pipe.flac")
    left: list[Skipped] = []
    assert [os.path.basename(p) for p in list_audio_files(d, skipped=left)] == ["good.wav", "tone.mp3"]
    assert [(os.path.basename(s.path), s.reason) for s in left] == [("pipe.flac", "not a regular file (a FIFO)")]
    (d / "list.txt").write_text("good.wav\ntone.mp3\nnotes.txt\n")
    ns = argparse.Namespace(alignments=None, audio_dir=None, file_list=str(d / "list.txt"), ids="stem")
    left = []
    paths, ids = resolve_inputs(ns, left)
    assert ids == ["good", "tone"] and [os.path.basename(s.path) for s in left] == ["notes.txt"]
    assert left[0].reason.startswith("not an audio file name (the extension is none of .wav, .flac, .ogg, .opus, .mp3")
    # a FIFO in a file list is refused before any decoder opens it
    items, skipped = probe([str(d / "pipe.flac")])
    assert not items and skipped[0].reason == "not a regular file (a FIFO)"
