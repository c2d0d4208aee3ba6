"""The soundfile decoder: one file (or a source's span) -> mono float32 at `SAMPLE_RATE`, and
padding decoded waves into a batch."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from megatron_slm.audio.sources import AudioSource, Input

SAMPLE_RATE = 16000  # what every decoder produces and every feature extractor expects


def load_audio(path: Input, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode one file (or only a source's span: soundfile seeks, the rest is never decoded) with
    soundfile, downmix to mono and resample (polyphase) to `sample_rate`."""
    import soundfile as sf

    if isinstance(path, AudioSource):
        with sf.SoundFile(path.open()) as f:
            sr = f.samplerate
            start = int(round(path.offset * sr))
            frames = -1 if path.duration is None else int(round(path.duration * sr))
            if start:
                f.seek(min(start, f.frames))
            audio = f.read(frames, dtype="float32", always_2d=True)
    else:
        audio, sr = sf.read(path, dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if sr != sample_rate:
        from scipy.signal import resample_poly

        g = np.gcd(int(sr), sample_rate)
        audio = resample_poly(audio, sample_rate // g, int(sr) // g).astype(np.float32)
    return audio


def pad_batch(waves: Sequence[np.ndarray], device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([w.size for w in waves], dtype=torch.int64)
    out = torch.zeros(len(waves), int(lengths.max()), dtype=torch.float32)
    for i, w in enumerate(waves):
        out[i, : w.size] = torch.from_numpy(w)
    return out.to(device), lengths.to(device)
