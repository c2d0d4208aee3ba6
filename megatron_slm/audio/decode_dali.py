"""The DALI decoder: a pipeline fed the encoded bytes of planned batches.

DALI facts this relies on (checked with DALI 1.x): `fn.decoders.audio` runs on the CPU only; resampling
can run on the GPU, so on a GPU we decode at the native rate and resample on the device (the
batch lands in GPU memory without a host round trip); `device_id=None` builds a CPU-only pipe.
"""
from __future__ import annotations

import collections
from typing import Iterable

import numpy as np
import torch

from megatron_slm.audio.probe import AudioItem

try:  # DALI is optional: the package must import (and work) without it.
    from nvidia.dali import fn as _dali_fn
    from nvidia.dali import pipeline_def as _dali_pipeline_def
    from nvidia.dali import types as _dali_types

    HAVE_DALI = True
except ImportError:  # pragma: no cover - depends on the environment
    HAVE_DALI = False


class EncodedSource:
    """External-source callback: the encoded bytes of the next planned batch. It records each
    batch it hands out in `pending`, so outputs (which come back in order) can be matched."""

    def __init__(self, plan: list[list[AudioItem]], pending: collections.deque):
        self._it = iter(plan)
        self._pending = pending

    def __call__(self):
        batch = next(self._it)  # StopIteration ends the DALI epoch
        self._pending.append(batch)
        return [np.frombuffer(item.source.encoded(), dtype=np.uint8) if item.source is not None
                else np.fromfile(item.path, dtype=np.uint8) for item in batch]

    def remaining(self) -> Iterable[list[AudioItem]]:
        return self._it


def build_pipeline(source: EncodedSource, batch_size: int, num_threads: int, device_id: int | None,
                   sample_rate: int):
    @_dali_pipeline_def(batch_size=batch_size, num_threads=num_threads, device_id=device_id,
                        prefetch_queue_depth=1, exec_dynamic=True)
    def pipe():
        encoded = _dali_fn.external_source(source=source, batch=True, dtype=_dali_types.UINT8, ndim=1,
                                           no_copy=False)
        if device_id is None:
            # CPU: the decoder resamples while decoding.
            audio, _ = _dali_fn.decoders.audio(encoded, dtype=_dali_types.FLOAT, downmix=True,
                                               sample_rate=sample_rate)
        else:
            # GPU: decode at the native rate on the CPU, resample on the device.
            audio, rate = _dali_fn.decoders.audio(encoded, dtype=_dali_types.FLOAT, downmix=True)
            audio = _dali_fn.audio_resample(audio.gpu(), in_rate=rate, out_rate=float(sample_rate),
                                            dtype=_dali_types.FLOAT)
        lengths = audio.shape(dtype=_dali_types.INT64)
        return _dali_fn.pad(audio, fill_value=0.0), lengths

    return pipe()


def to_torch(waves, lengths, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A pipeline's (padded waves, lengths) as tensors on `device` (a CUDA batch is copied device to device)."""
    n = torch.from_numpy(np.asarray(lengths.as_array()).reshape(-1).astype(np.int64))
    dense = waves.as_tensor()
    if device.type == "cuda":
        from nvidia.dali.plugin.pytorch import feed_ndarray

        out = torch.empty(tuple(dense.shape()), dtype=torch.float32, device=device)
        feed_ndarray(dense, out, cuda_stream=torch.cuda.current_stream(device))
        return out, n.to(device)
    return torch.from_numpy(np.array(dense)), n
