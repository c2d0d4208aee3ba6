"""The one check of decoded audio, whatever decoded it (DALI, soundfile, a Lhotse span or Shar member)."""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from megatron_slm.audio.probe import AudioItem

# decoded audio may fall this short (or 2 %) of the length its header declares (resampling, codec
# framing, estimated mp3 lengths); more is a truncated file
TRUNCATION_TOLERANCE_S = 0.05


def screen(waves: torch.Tensor, lengths: torch.Tensor, items: Sequence[AudioItem], sample_rate: int
           ) -> tuple[list[Optional[str]], list[Optional[str]]]:
    """Per item, (why it must be skipped, what to warn about), each None when nothing. Skipped:
    NaN/Inf samples (one such file would poison a k-means codebook or become a run of one unit),
    fewer samples than the header declares (a truncated file). Warned: all samples zero (silence
    is valid audio, but a corpus of it is worth knowing about). `waves` [B, T] zero padded, on
    any device."""
    stats = torch.stack([torch.isnan(waves).sum(1), torch.isinf(waves).sum(1), (waves != 0).any(1).long(),
                         lengths.to(waves.device).long()], 1)
    skips, warns = [], []
    for item, (nan, inf, nonzero, n) in zip(items, stats.cpu().tolist()):  # one transfer per batch
        skip = warn = None
        declared = item.duration * sample_rate
        if nan or inf:
            skip = f"non-finite samples ({nan} NaN, {inf} Inf)"
        elif n < declared - max(TRUNCATION_TOLERANCE_S * sample_rate, 0.02 * declared):
            skip = f"truncated: the header declares {item.duration:.3f} s, {n / sample_rate:.3f} s decoded"
        elif not nonzero:
            warn = "silent (all samples zero): kept"
        skips.append(skip)
        warns.append(warn)
    return skips, warns
