"""The Mimi neural codec (transformers `MimiModel` from a local directory) as a speech tokenizer:
24 kHz audio -> frames at 12.5 Hz of the first n_q residual codebooks (the first is semantic),
and frames -> 24 kHz audio with its own decoder (1920 samples a frame).

    codec = MimiCodec.from_pretrained("/models/mimi", num_codebooks=8)
    codes, frames = codec(waves, lengths)        # [B, F, n_q] codes in [0, K), [B] frames
    audio = codec.decode(codes[0, : frames[0]])  # [F * 1920] float32 at 24 kHz

    ex = MimiUnitExtractor.from_args(model_dir="/models/mimi", num_codebooks=8)
    for rec in ex.units_for_files(paths): ...    # UnitRecords, codebooks=8, no dedup

Frames equal `MimiModel.encode` of each utterance alone. The encoder is causal, so in a
zero-padded batch every frame but an utterance's last is its own; the last frame of an
utterance that ends inside a frame (and before the batch's longest) reads the batch padding
through the convolutions' edge padding, so those utterances are encoded again, grouped by
equal length. On the CPU batches hold one utterance (the default), so nothing is encoded twice.
"""
from __future__ import annotations

import json
import os
from typing import Iterator, Optional, Sequence

import numpy as np
import torch

from megatron_slm import conventions
from megatron_slm.audio.loader import AudioLoader
from megatron_slm.audio.probe import AudioItem
from megatron_slm.audio.skips import Skipped
from megatron_slm.units.records import UnitRecord, make_codec_meta
from megatron_slm.units.weights import state_dict_sha256

KIND = "mimi"


class MimiError(ValueError):
    """A directory that is not a usable Mimi model, or settings it cannot give."""


def read_mimi_config(model_dir: str) -> dict:
    """config.json of a Mimi directory; MimiError naming the directory otherwise."""
    if not os.path.isdir(model_dir):
        raise MimiError(f"--model-dir {model_dir!r}: not a directory (a local HF MimiModel directory)")
    path = os.path.join(model_dir, "config.json")
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except OSError:
        raise MimiError(f"{model_dir}: no config.json (not an HF model directory)") from None
    except ValueError as e:
        raise MimiError(f"{path}: not JSON ({e})") from None
    if not isinstance(config, dict) or config.get("model_type") != KIND:
        kind = config.get("model_type") if isinstance(config, dict) else None
        raise MimiError(f"{path}: model_type is {kind!r}, not 'mimi' (not a Mimi codec)")
    return config


class MimiCodec:
    """A MimiModel cut to its first `num_codebooks` codebooks, in float32 on `device`."""

    def __init__(self, model: torch.nn.Module, num_codebooks: int, device: str | torch.device = "cpu",
                 source: Optional[str] = None):
        cfg = model.config
        if isinstance(num_codebooks, bool) or not isinstance(num_codebooks, int) or \
                not 1 <= num_codebooks <= cfg.num_quantizers:
            raise MimiError(f"--num-codebooks {num_codebooks} out of range 1..{cfg.num_quantizers} for the Mimi model"
                            + (f" in {source}" if source else ""))
        self.device = torch.device(device)
        self.model = model.to(self.device, torch.float32).eval()
        self.num_codebooks, self.source = num_codebooks, source
        self.sample_rate = int(cfg.sampling_rate)
        self.frame_rate = float(cfg.frame_rate)
        spf = self.sample_rate / self.frame_rate
        if spf != int(spf):
            raise MimiError(f"Mimi frame rate {self.frame_rate} Hz does not divide {self.sample_rate} Hz")
        self.samples_per_frame = int(spf)
        self.codebook_size = int(cfg.codebook_size)
        self.weights_sha256 = state_dict_sha256(self.model)
        self.name = KIND  # what progress lines and skip reasons call it

    @classmethod
    def from_pretrained(cls, model_dir: str, num_codebooks: int, device: str | torch.device = "cpu") -> "MimiCodec":
        read_mimi_config(model_dir)
        from transformers import MimiModel

        try:
            model = MimiModel.from_pretrained(model_dir, local_files_only=True)
        except (OSError, ValueError, RuntimeError) as e:  # missing or mis-shaped weights
            raise MimiError(f"{model_dir}: cannot load a MimiModel from it ({e})") from None
        return cls(model, num_codebooks, device, source=os.path.abspath(model_dir))

    def num_frames(self, num_samples: torch.Tensor) -> torch.Tensor:
        """Frames `MimiModel.encode` gives for `num_samples` samples: a started frame counts."""
        return torch.div(num_samples + self.samples_per_frame - 1, self.samples_per_frame, rounding_mode="floor")

    def _encode(self, waves: torch.Tensor) -> torch.Tensor:  # [B, T] -> [B, n_q, F]
        return self.model.encode(waves[:, None], num_quantizers=self.num_codebooks).audio_codes

    @torch.inference_mode()
    def __call__(self, waves: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes [B, F, n_q] (int64, each in [0, K)) and frames [B] of a zero-padded batch."""
        waves, lengths = waves.to(self.device, torch.float32), lengths.to(self.device)
        codes = self._encode(waves)
        longest = waves.shape[1]
        # utterances whose last frame saw the batch padding, grouped by length (see the module doc)
        redo: dict[int, list[int]] = {}
        for i, n in enumerate(lengths.tolist()):
            if n < longest and n % self.samples_per_frame:
                redo.setdefault(n, []).append(i)
        for n, rows in redo.items():
            own = self._encode(waves[rows, :n])
            codes[rows, :, : own.shape[-1]] = own
        return codes.transpose(1, 2).long(), self.num_frames(lengths)

    @torch.inference_mode()
    def decode(self, codes: np.ndarray | torch.Tensor) -> np.ndarray:
        """[F, n_q] codes (n_q <= the model's codebooks) -> [F * samples_per_frame] float32 audio."""
        c = torch.as_tensor(np.asarray(codes), dtype=torch.long, device=self.device)
        if c.ndim != 2 or not 1 <= c.shape[1] <= self.model.config.num_quantizers:
            raise MimiError(f"expected [frames, n_q] codes with n_q <= {self.model.config.num_quantizers}, "
                            f"got shape {list(c.shape)}")
        if c.numel() and (int(c.min()) < 0 or int(c.max()) >= self.codebook_size):
            raise MimiError(f"codes outside [0, {self.codebook_size})")
        audio = self.model.decode(c.T[None]).audio_values  # [1, 1, F * spf]
        return audio[0, 0, : c.shape[0] * self.samples_per_frame].float().cpu().numpy()

    def identity(self) -> dict:
        """The sidecar's `tokenizer`: what changes the codes (model path informational)."""
        return {"kind": KIND, "codebook_size": self.codebook_size, "num_codebooks": self.num_codebooks,
                "frame_rate": self.frame_rate, "sample_rate": self.sample_rate,
                "weights_sha256": self.weights_sha256, "model": self.source}


class MimiUnitExtractor:
    """Audio files -> `UnitRecord`s of Mimi frames (flattened in codebook order, no dedup), on the
    same audio layer and bad-audio screen as k-means units, resampled to 24 kHz. The speech
    tokenizer interface of units/tokenizers.py."""

    def __init__(self, codec: MimiCodec, loader: AudioLoader, min_seconds: float = 0.1,
                 max_seconds: Optional[float] = None, streams: Optional[int] = None,
                 compat: str = conventions.DEFAULT):
        from megatron_slm.units.pipeline import FeatureStream

        if loader.sample_rate != codec.sample_rate:
            raise MimiError(f"the audio loader decodes at {loader.sample_rate} Hz but Mimi takes {codec.sample_rate} Hz")
        self.codec = codec
        # decoding, the screen, bucketing and concurrent streams: the k-means path's
        self._stream = FeatureStream(codec, loader, min_seconds, max_seconds, streams)
        self.meta = make_codec_meta(codec.identity(), compat)
        from megatron_slm.units.records import inventory

        self.inventory = inventory(self.meta)
        self.unit_seconds = 1.0 / codec.frame_rate

    @classmethod
    def from_args(cls, model_dir: Optional[str] = None, num_codebooks: int = 8, device: Optional[str] = None,
                  audio_backend: str = "auto", max_batch_seconds: Optional[float] = None, num_threads: int = 2,
                  min_seconds: float = 0.1, max_seconds: Optional[float] = None, streams: Optional[int] = None,
                  compat: str = conventions.DEFAULT) -> "MimiUnitExtractor":
        from megatron_slm.units.pipeline import default_device

        if not model_dir:
            raise MimiError("the mimi tokenizer needs --model-dir (a local HF MimiModel directory)")
        device = device or default_device()
        codec = MimiCodec.from_pretrained(model_dir, num_codebooks, device)
        loader = AudioLoader(audio_backend, device, num_threads, sample_rate=codec.sample_rate,
                             max_batch_seconds=max_batch_seconds)
        # audio shorter than one frame is a counted skip at the probe
        return cls(codec, loader, max(min_seconds, 1.0 / codec.frame_rate), max_seconds, streams, compat)

    @property
    def skipped(self) -> list[Skipped]:
        return self._stream.skipped

    @property
    def warnings(self) -> list[Skipped]:
        return self._stream.warnings

    @property
    def loader(self) -> AudioLoader:
        return self._stream.loader

    @property
    def streams(self) -> int:
        return self._stream.streams

    def prepare(self, paths: Sequence, ids: Sequence[str] | None = None) -> list[AudioItem]:
        return self._stream.prepare(paths, ids)

    def units_for_items(self, items: Sequence[AudioItem]) -> Iterator[UnitRecord]:
        spf, n_q = self.codec.samples_per_frame, self.codec.num_codebooks
        for batch, (codes, frames) in self._stream.computed(items):
            codes, frames = codes.cpu().numpy(), frames.cpu().tolist()
            for i, item in enumerate(batch.items):
                n = int(batch.lengths[i])
                if n < spf:  # decoded shorter than its header said
                    self.skipped.append(Skipped(item.path, f"shorter than one Mimi frame ({n} < {spf} samples "
                                                           f"at {self.codec.sample_rate} Hz)"))
                    continue
                units = self.inventory.flatten(codes[i, : frames[i]])
                yield UnitRecord(item.id, item.path, units.tolist(), [1] * frames[i], self.unit_seconds,
                                 frames[i], round(n / self.codec.sample_rate, 6), codebooks=n_q)

    def units_for_files(self, paths: Sequence[str], ids: Sequence[str] | None = None) -> Iterator[UnitRecord]:
        yield from self.units_for_items(self.prepare(paths, ids))

