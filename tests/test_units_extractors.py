"""Feature extractors: tiny random mhubert-25Hz HubertModel and the mel extractor + k-means training."""
import os
import sys

import numpy as np
import pytest
import torch

from megatron_slm.audio.decode_soundfile import load_audio
from megatron_slm.units.extractors import HubertExtractor, MelExtractor, build_extractor
from megatron_slm.units.kmeans import inertia, load_centroids
from megatron_slm.units.pipeline import FeatureStream, UnitExtractor
from megatron_slm.audio.loader import AudioLoader

from conftest import CORPUS, REPO

sys.path.insert(0, os.path.join(REPO, "tools"))


def tiny_mhubert_25hz():
    """Random HubertModel with mhubert-base-25hz's conv stack (7 layers of hubert-base plus one
    stride-2 layer: 640 samples per frame at 16 kHz) and a tiny transformer."""
    from transformers import HubertConfig, HubertModel

    cfg = HubertConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
                       conv_dim=(16,) * 8, conv_stride=(5, 2, 2, 2, 2, 2, 2, 2), conv_kernel=(10, 3, 3, 3, 3, 2, 2, 2),
                       num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, feat_extract_norm="group")
    torch.manual_seed(0)
    return HubertModel(cfg).eval()


@pytest.fixture(scope="module")
def hubert_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("mhubert")
    tiny_mhubert_25hz().save_pretrained(d)
    return str(d)


def test_hubert_25hz_gives_25_units_per_second(hubert_dir, tmp_path):
    ex = build_extractor("hubert", model_dir=hubert_dir, layer=2, dtype="float32")
    assert ex.frame_rate == 25.0 and ex.dim == 32
    secs = np.array([1.0, 2.5, 4.0])
    lengths = torch.tensor((secs * 16000).astype(np.int64))
    waves = torch.randn(3, int(lengths.max())) * (torch.arange(int(lengths.max()))[None] < lengths[:, None])
    feats, frames = ex(waves, lengths)
    assert feats.shape[:2] == (3, int(frames.max()))
    # the conv receptive field (~25 ms) drops at most the last frame
    assert np.all(np.abs(frames.numpy() - 25 * secs) <= 1)
    # batched (padded) features equal each utterance run alone
    for i in range(3):
        alone, n = ex(waves[i:i + 1, : lengths[i]], lengths[i:i + 1])
        torch.testing.assert_close(feats[i, : frames[i]], alone[0, : n[0]], atol=1e-4, rtol=1e-4)

    # end to end through the on-the-fly API, with a random codebook
    np.save(tmp_path / "km.npy", np.random.default_rng(0).normal(size=(20, 32)).astype(np.float32))
    ux = UnitExtractor.from_args(extractor="hubert", model_dir=hubert_dir, layer=2, kmeans=str(tmp_path / "km.npy"),
                                 device="cpu", audio_backend="soundfile", dtype="float32")
    path = os.path.join(CORPUS, "audio", "s01_01.flac")
    (rec,) = list(ux.units_for_files([path]))
    assert rec.unit_seconds == 0.04 and rec.id == "s01_01"
    assert abs(rec.num_frames - 25 * rec.audio_seconds) <= 1
    assert ux.meta["extractor"]["layer"] == 2 and ux.meta["kmeans"]["k"] == 20


def test_hubert_layer_is_the_output_of_layer_l():
    model = tiny_mhubert_25hz()
    w = torch.randn(1, 16000)
    with torch.no_grad():
        ref = model(w, output_hidden_states=True).hidden_states[2]
    ex = HubertExtractor(model, layer=2)  # truncates the encoder to 2 layers
    assert len(ex.model.encoder.layers) == 2
    feats, _ = ex(w, torch.tensor([16000]))
    torch.testing.assert_close(feats, ref, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="layer 9 out of range"):
        HubertExtractor(tiny_mhubert_25hz(), layer=9)


def test_compute_dtype_bf16_gives_the_float32_units_and_is_not_part_of_the_unit_identity(hubert_dir):
    """What bf16 must preserve is the units, not raw features of random weights: those differ by ~1%
    on AVX-512 CPUs and by ~28% with AMX-bf16 kernels (transformers' own HubertModel alike). The
    units of a codebook fitted to the float32 features of corpus speech must agree; on this model
    isotropic noise of 30% of the feature norm still keeps ~87% of them, so 80% holds on any CPU."""
    from megatron_slm.units.kmeans import train_minibatch_kmeans
    from megatron_slm.units.extractors import resolve_dtype
    from megatron_slm.units.records import compatibility_key, make_meta

    native = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert resolve_dtype("auto", "cpu") == (torch.bfloat16 if native else torch.float32)
    assert resolve_dtype("float16", "cpu") == torch.float16
    with pytest.raises(ValueError, match="unknown dtype 'fp8'"):
        resolve_dtype("fp8", "cpu")
    f32 = build_extractor("hubert", model_dir=hubert_dir, layer=2, dtype="float32")
    b16 = build_extractor("hubert", model_dir=hubert_dir, layer=2, dtype="bfloat16")
    assert b16.identity()["dtype"] == "bfloat16" and f32.identity()["dtype"] == "float32"
    files = sorted(os.listdir(os.path.join(CORPUS, "audio")))[:6]
    waves = [torch.as_tensor(load_audio(os.path.join(CORPUS, "audio", f), 16000)).float() for f in files]
    lengths = torch.tensor([len(w) for w in waves])
    batch = torch.stack([torch.nn.functional.pad(w, (0, int(lengths.max()) - len(w))) for w in waves])
    ref, frames = f32(batch, lengths)
    got, _ = b16(batch, lengths)  # padded batch: exercises the masked group norm in bf16
    assert got.dtype == torch.float32
    a = torch.cat([ref[i, : frames[i]] for i in range(len(files))])
    b = torch.cat([got[i, : frames[i]] for i in range(len(files))])
    assert torch.isfinite(b).all() and a.shape[0] > 500
    codebook = torch.as_tensor(train_minibatch_kmeans(a, 20, seed=0))
    agree = float((torch.cdist(a, codebook).argmin(1) == torch.cdist(b, codebook).argmin(1)).float().mean())
    assert agree >= 0.8, f"bf16 units agree with float32 on {agree:.1%} of frames"
    meta = lambda ex: make_meta(ex.identity(), 20, "sha", None, True)  # noqa: E731
    assert compatibility_key(meta(f32)) == compatibility_key(meta(b16))


def test_concurrent_streams_equal_one_stream_and_restore_threads(hubert_dir):
    """Several utterance batches in flight on worker threads (the CPU default) give the features
    of one stream, in the same order; padded batches check the per-thread group-norm state."""
    paths = [os.path.join(CORPUS, "audio", f) for f in sorted(os.listdir(os.path.join(CORPUS, "audio")))[:8]]
    ex = build_extractor("hubert", model_dir=hubert_dir, layer=2, dtype="float32")
    loader = AudioLoader("soundfile", "cpu", max_batch_seconds=20.0)  # 2-3 padded files per batch
    threads = torch.get_num_threads()
    one = list(FeatureStream(ex, loader, streams=1).features_for_files(paths))
    many = list(FeatureStream(ex, loader, streams=3).features_for_files(paths))
    assert torch.get_num_threads() == threads
    assert [i for i, _ in many] == [i for i, _ in one] and len(one) == 8
    for (_, a), (_, b) in zip(one, many):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    assert FeatureStream(ex, loader).streams == min(threads, 4)


def test_mel_frames_and_padding_invariance():
    ex = MelExtractor()
    a = torch.from_numpy(load_audio(os.path.join(CORPUS, "audio", "s01_02.flac")))
    n = a.numel()
    feats, frames = ex(a[None], torch.tensor([n]))
    assert int(frames[0]) == n // 640 and feats.shape == (1, n // 640, 40)
    padded = torch.zeros(2, n + 5000)
    padded[0, :n] = a
    padded[1, :1000] = a[:1000]
    f2, fr2 = ex(padded, torch.tensor([n, 1000]))
    torch.testing.assert_close(f2[0, : frames[0]], feats[0], atol=1e-4, rtol=1e-4)
    assert int(fr2[1]) == 1 and torch.all(f2[1, 1:] == 0)


def test_mel_train_kmeans_beats_random_centroids(tmp_path):
    import train_kmeans

    out = tmp_path / "km16.npy"
    rc = train_kmeans.main(["--alignments", os.path.join(CORPUS, "alignments.jsonl"), "--extractor", "mel",
                            "--k", "16", "--steps", "60", "--batch-size", "1024", "--max-frames", "3000",
                            "--out", str(out), "--audio-backend", "soundfile"])
    assert rc == 0
    c = load_centroids(out)
    assert c.shape == (16, 40)
    stream = FeatureStream(MelExtractor(), AudioLoader("soundfile"))
    paths = [os.path.join(CORPUS, "audio", f"s07_0{i}.flac") for i in range(1, 4)]
    x = torch.cat([f for _, f in stream.features_for_files(paths)])
    rand = x[torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))[:16]]
    assert inertia(x, c) < 0.8 * inertia(x, rand)


def test_train_kmeans_cli_user_errors(tmp_path, capsys):
    import train_kmeans

    assert train_kmeans.main(["--audio-dir", str(tmp_path / "nope"), "--k", "4", "--out", str(tmp_path / "k.npy")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert train_kmeans.main(["--audio-dir", str(tmp_path), "--k", "4", "--out", str(tmp_path / "k.txt")]) == 2
    assert "must end in .npy" in capsys.readouterr().err
    assert train_kmeans.main(["--audio-dir", str(tmp_path), "--k", "4", "--out", str(tmp_path / "k.npy")]) == 2
    assert "no audio files" in capsys.readouterr().err
    assert train_kmeans.main(["--alignments", os.path.join(CORPUS, "alignments.jsonl"), "--extractor", "hubert",
                              "--k", "4", "--out", str(tmp_path / "k.npy")]) == 2
    assert "--model-dir" in capsys.readouterr().err
