"""A vocoder for log-mel units (the `mel` extractor, e.g. the bundled corpus's K=100 codebook):
each unit's codebook centroid is taken as a log-mel frame, and the frames are inverted exactly
along the extractor's feature definition.

  1. centroid rows, repeated by the units' durations -> mean-normalised log-mel frames [F, n_mels]
  2. + the per-bin mean log-mel the extractor subtracted (measured on the units file's audio when
     it can be read; otherwise 0, which keeps the timbre flat)
  3. exp(.) - floor -> mel power; the mel filterbank undone by non-negative least squares
     (multiplicative updates) -> a linear power spectrogram
  4. Griffin-Lim phase reconstruction (with momentum) using torch.stft/istft at the extractor's
     n_fft, hop and window; the extractor's half-hop frame shift undone

Made from a units file (`--vocoder units.jsonl`, its sidecar names the extractor and k-means) or
its sidecar (`units.jsonl.meta.json`). Units the model generates are deduplicated: each then lasts
the units file's mean run length (cumulative rounding keeps the total right).
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np
import torch

from megatron_slm.generate.sampling import GenerationError

MAX_MEAN_FILES = 8  # audio files read to measure the per-bin mean log-mel


def spread_durations(n: int, mean: float) -> list[int]:
    """n integer durations >= 1 whose running sum tracks i * mean (cumulative rounding)."""
    mean = max(float(mean), 1.0)
    edges = np.floor(np.arange(n + 1) * mean + 0.5).astype(np.int64)
    return np.maximum(np.diff(edges), 1).tolist()


def nnls_columns(target: torch.Tensor, basis: torch.Tensor, iters: int = 50) -> torch.Tensor:
    """X >= 0 minimising ||X @ basis - target|| for target [F, M], basis [N, M] -> X [F, N]
    (Lee-Seung multiplicative updates from the non-negative transpose solution)."""
    eps = 1e-12
    gram = basis @ basis.T                      # [N, N]
    rhs = target @ basis.T                      # [F, N]
    x = (rhs / gram.sum(0).clamp(min=eps)).clamp(min=eps)  # exact when the basis rows do not overlap
    for _ in range(iters):
        x = x * rhs.clamp(min=0) / (x @ gram).clamp(min=eps)
    return x


def griffin_lim(mag: torch.Tensor, n_fft: int, hop: int, win: int, window: torch.Tensor, length: int,
                iters: int = 64, momentum: float = 0.99, seed: int = 0) -> torch.Tensor:
    """Waveform [length] whose centred STFT magnitude approximates `mag` [n_fft//2+1, frames]
    (fast Griffin-Lim: each phase estimate extrapolated by `momentum` before projection)."""
    g = torch.Generator().manual_seed(seed)
    angles = torch.exp(2j * torch.pi * torch.rand(mag.shape, generator=g, dtype=torch.float64)).to(torch.complex64)
    prev = torch.zeros_like(angles)
    kw = dict(n_fft=n_fft, hop_length=hop, win_length=win, window=window, center=True)
    for _ in range(iters):
        wav = torch.istft(mag * angles, length=length, **kw)
        rebuilt = torch.stft(wav, return_complex=True, **kw)
        angles = rebuilt - prev * (momentum / (1 + momentum))
        angles = angles / (angles.abs() + 1e-16)
        prev = rebuilt
    return torch.istft(mag * angles, length=length, **kw)


class CodebookGriffinLim:
    kind = "griffin-lim"

    def __init__(self, centroids: np.ndarray, meta: dict, mel_mean: Optional[np.ndarray] = None,
                 frames_per_unit: float = 1.0, iters: int = 64, source: str = ""):
        from megatron_slm.units.extractors import LOG_MEL_FLOOR, MelExtractor
        from megatron_slm.units.records import compatibility_key

        ident = meta.get("extractor", {})
        if ident.get("name") != "mel":
            raise GenerationError(f"{source}: units from the {ident.get('name')!r} extractor are not log-mel frames; "
                                  "Griffin-Lim inversion needs `mel` units (use a unit HiFi-GAN for HuBERT units)")
        self.ext = MelExtractor(n_mels=int(ident["n_mels"]), frame_rate=float(ident["frame_rate"]),
                                win_seconds=int(ident["win"]) / int(ident["sample_rate"]),
                                sample_rate=int(ident["sample_rate"]))
        theirs = {k: v for k, v in ident.items() if k != "dtype"}
        if self.ext.identity() != theirs:
            raise GenerationError(f"{source}: mel extractor settings {theirs} are not the ones this code computes "
                                  f"({self.ext.identity()}); cannot invert them")
        self.centroids = torch.as_tensor(np.asarray(centroids, dtype=np.float32))
        if self.centroids.shape[1] != self.ext.dim:
            raise GenerationError(f"{source}: centroids have {self.centroids.shape[1]} dims, the extractor {self.ext.dim}")
        self.floor = LOG_MEL_FLOOR
        self.mel_mean = torch.zeros(self.ext.dim) if mel_mean is None else torch.as_tensor(mel_mean, dtype=torch.float32)
        self.frames_per_unit = float(frames_per_unit)
        self.iters = iters
        self.source = source
        self.unit_identity = compatibility_key(meta)
        self.num_units = int(self.centroids.shape[0])
        self.sample_rate = self.ext.sample_rate
        self.hop = self.ext.hop

    @classmethod
    def from_units_file(cls, path: str, iters: int = 64) -> "CodebookGriffinLim":
        """From a units JSONL (or its .meta.json sidecar): codebook, mean run length, mean log-mel."""
        from megatron_slm.units.kmeans import centroids_sha256, load_centroids
        from megatron_slm.units.records import iter_records, meta_path, read_meta

        units_path = path[: -len(".meta.json")] if path.endswith(".meta.json") else path
        try:
            meta = read_meta(units_path)
        except (FileNotFoundError, ValueError) as e:
            raise GenerationError(str(e)) from None
        base = os.path.dirname(os.path.abspath(meta_path(units_path)))
        km = meta["kmeans"].get("path")
        if not km:
            raise GenerationError(f"{meta_path(units_path)}: field 'kmeans.path' is empty (where are the centroids?)")
        km_file = km if os.path.isabs(km) else os.path.join(base, km)
        try:
            centroids = load_centroids(km_file)
        except (FileNotFoundError, ValueError) as e:
            raise GenerationError(f"{meta_path(units_path)}: kmeans.path: {e}") from None
        if centroids_sha256(centroids) != meta["kmeans"]["sha256"]:
            raise GenerationError(f"{km_file}: centroids differ from the ones the units were made with "
                                  f"(sha256 in {meta_path(units_path)})")
        records = list(iter_records(units_path)) if os.path.isfile(units_path) else []
        runs = sum(len(r.durations) for r in records)
        mean_run = (sum(r.num_frames for r in records) / runs) if runs and meta.get("deduplicated") else 1.0
        vocoder = cls(centroids, meta, None, mean_run, iters, source=os.path.abspath(path))
        vocoder.mel_mean = vocoder._measure_mel_mean([os.path.join(base, r.path) for r in records[:MAX_MEAN_FILES]])
        return vocoder

    def _measure_mel_mean(self, paths: Sequence[str]) -> torch.Tensor:
        from megatron_slm.audio.decode_soundfile import load_audio

        sums, count = torch.zeros(self.ext.dim), 0
        for p in paths:
            if not os.path.isfile(p):
                continue
            wav = torch.from_numpy(load_audio(p, self.sample_rate))[None]
            frames = int(self.ext.num_frames(torch.tensor([wav.shape[1]]))[0])
            if frames:
                sums += self.ext.log_mel(wav, frames)[0].sum(0).cpu()
                count += frames
        return sums / count if count else torch.zeros(self.ext.dim)

    def frames(self, units: Sequence[int], durations: Optional[Sequence[int]] = None) -> torch.Tensor:
        """Mean-normalised log-mel frames [F, n_mels] of the units (the centroids, repeated)."""
        u = torch.as_tensor(list(units), dtype=torch.long)
        d = torch.as_tensor(list(durations) if durations is not None else spread_durations(len(u), self.frames_per_unit))
        return torch.repeat_interleave(self.centroids[u], d, dim=0)

    @torch.no_grad()
    def __call__(self, units: Sequence[int], durations: Optional[Sequence[int]] = None,
                 speaker: Optional[str] = None) -> np.ndarray:
        from megatron_slm.units.pipeline import _intra_op_threads

        # small FFTs and matmuls gain nothing from threads, and on a busy CPU OpenMP's
        # spinning made them 20x slower (measured); one thread is the fast choice
        with _intra_op_threads(1):
            return self._invert(units, durations)

    def _invert(self, units, durations) -> np.ndarray:
        ext = self.ext
        logmel = self.frames(units, durations) + self.mel_mean
        power_mel = (torch.exp(logmel) - self.floor).clamp(min=0)
        fb = ext.fb.cpu()                                            # [n_freq, n_mels]
        power = nnls_columns(power_mel, fb)                          # [F, n_freq]
        F_ = power.shape[0]
        # one extra (silent) frame: a centred STFT of F x hop samples has F + 1 frames
        mag = torch.cat([power.sqrt().T, torch.zeros(power.shape[1], 1)], dim=1)
        y = griffin_lim(mag, ext.n_fft, ext.hop, ext.win, ext.window.cpu(), F_ * ext.hop, self.iters)
        # extractor frame i is centred at (i + 1/2) hops of its input; a centred STFT frame at i hops
        shift = ext.n_fft // 2 - (ext.win // 2 - ext.hop // 2)
        wav = torch.cat([torch.zeros(shift), y])[: F_ * ext.hop]
        peak = float(wav.abs().max())
        return (wav / peak * 0.95 if peak > 0.95 else wav).numpy().astype(np.float32)
