"""Frame-level feature extractors behind one interface: `hubert` (a HuggingFace HubertModel
from a local directory, hidden layer L) and `mel` (log-mel frames, no weights needed).

Contract: `extractor(waves [B, T], lengths [B]) -> (features [B, F, D], frame_lengths [B])` on
the extractor's device, with frame i covering audio [i, i+1) × `1 / frame_rate` seconds.
"""
from __future__ import annotations

import abc
import math
import os
import threading
from typing import Any

import torch

from megatron_slm import conventions
from megatron_slm.audio.decode_soundfile import SAMPLE_RATE


class FeatureExtractor(abc.ABC):
    name: str
    frame_rate: float  # frames per second
    dim: int

    def __init__(self, device: str | torch.device = "cpu"):
        self.device = torch.device(device)

    @abc.abstractmethod
    def num_frames(self, num_samples: torch.Tensor) -> torch.Tensor:
        """Frames produced for inputs of `num_samples` samples (elementwise)."""

    @abc.abstractmethod
    def __call__(self, waves: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ...

    @abc.abstractmethod
    def identity(self) -> dict[str, Any]:
        """Everything that changes the features: units from different identities never mix."""

    def weights_sha256(self) -> str | None:
        """A hash of the model weights the features come from (None: no weights)."""
        return None


def mel_filterbank(n_mels: int, n_fft: int, sample_rate: int, fmin: float = 0.0, fmax: float | None = None) -> torch.Tensor:
    """[n_fft//2+1, n_mels] triangular HTK-mel filters (slaney-style area normalisation)."""
    fmax = fmax or sample_rate / 2

    def hz_to_mel(f):
        return 2595.0 * torch.log10(1.0 + f / 700.0)

    def mel_to_hz(m):
        return 700.0 * (10 ** (m / 2595.0) - 1.0)

    mels = torch.linspace(hz_to_mel(torch.tensor(fmin)), hz_to_mel(torch.tensor(fmax)), n_mels + 2, dtype=torch.float64)
    hz = mel_to_hz(mels)
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    lower, center, upper = hz[:-2, None], hz[1:-1, None], hz[2:, None]
    up = (freqs[None] - lower) / (center - lower)
    down = (upper - freqs[None]) / (upper - center)
    fb = torch.clamp(torch.minimum(up, down), min=0.0) * (2.0 / (upper - lower))
    return fb.T.to(torch.float32)


LOG_MEL_FLOOR = 1e-6  # log(mel power + floor): keeps silence finite


class MelExtractor(FeatureExtractor):
    """Log-mel frames with per-utterance mean normalisation (so loudness does not pick units).

    One frame per `hop` samples: frame i is centred at (i + 0.5) hops, i.e. covers [i, i+1) hops.
    """

    name = "mel"

    def __init__(self, n_mels: int = 40, frame_rate: float = 25.0, win_seconds: float = 0.064,
                 sample_rate: int = SAMPLE_RATE, device: str | torch.device = "cpu"):
        super().__init__(device)
        hop = sample_rate / frame_rate
        if hop != int(hop):
            raise ValueError(f"mel frame rate {frame_rate} Hz does not divide {sample_rate} Hz")
        self.hop, self.n_fft = int(hop), 2 ** math.ceil(math.log2(win_seconds * sample_rate))
        self.win = int(win_seconds * sample_rate)
        self.frame_rate, self.dim, self.sample_rate = float(frame_rate), n_mels, sample_rate
        self.fb = mel_filterbank(n_mels, self.n_fft, sample_rate).to(self.device)
        self.window = torch.hann_window(self.win, device=self.device)

    def num_frames(self, num_samples: torch.Tensor) -> torch.Tensor:
        return torch.div(num_samples, self.hop, rounding_mode="floor")

    @torch.no_grad()
    def log_mel(self, waves: torch.Tensor, frames: int) -> torch.Tensor:
        """[B, frames, n_mels] log-mel before the per-utterance normalisation (what a vocoder inverts)."""
        # Shift by half a hop so frame i is centred in [i, i+1) hops; pad the window on both sides.
        x = torch.nn.functional.pad(waves.to(self.device), (self.win // 2 - self.hop // 2, self.win))
        spec = torch.stft(x, self.n_fft, self.hop, self.win, self.window, center=False, return_complex=True)
        mel = (spec.abs() ** 2).transpose(1, 2)[:, :frames] @ self.fb
        return torch.log(mel + LOG_MEL_FLOOR)

    @torch.no_grad()
    def __call__(self, waves, lengths):
        frames = self.num_frames(lengths.to(self.device))
        f = int(frames.max())
        logmel = self.log_mel(waves, f)
        mask = (torch.arange(f, device=self.device)[None] < frames[:, None]).unsqueeze(-1)
        mean = (logmel * mask).sum(1, keepdim=True) / frames.clamp(min=1)[:, None, None]
        return ((logmel - mean) * mask), frames

    def identity(self):
        return {"name": self.name, "n_mels": self.dim, "frame_rate": self.frame_rate, "n_fft": self.n_fft,
                "win": self.win, "hop": self.hop, "sample_rate": self.sample_rate, "version": 1}


class _MaskedGroupNorm(torch.nn.Module):
    """Drop-in for the per-channel GroupNorm of HuBERT's first conv layer that ignores padding,
    so a batched padded forward gives each utterance the features of its own unpadded forward."""

    def __init__(self, norm: torch.nn.GroupNorm):
        super().__init__()
        if norm.num_groups != norm.num_channels:
            raise ValueError("masked group norm expects one group per channel (HuBERT 'group' norm)")
        self.norm = norm
        self._local = threading.local()  # CPU extraction runs forwards in several threads at once

    @property
    def valid(self) -> torch.Tensor | None:
        """[B] valid output frames of the forward running in this thread (None: no padding)."""
        return getattr(self._local, "valid", None)

    @valid.setter
    def valid(self, value: torch.Tensor | None) -> None:
        self._local.valid = value

    def forward(self, x):  # x: [B, C, T]
        valid = self.valid
        if valid is None or bool((valid >= x.shape[-1]).all()):
            return self.norm(x)  # nothing padded in this batch: the fused kernel
        mask = (torch.arange(x.shape[-1], device=x.device)[None] < valid[:, None]).unsqueeze(1).to(x.dtype)
        n = valid.clamp(min=1).float()[:, None, None]
        # Few passes over this large [B, 512, T] activation: masked sums of x and x^2 (accumulated
        # in float32, E[x^2] - E[x]^2 is unusable in bf16), then one fused scale-and-shift (what
        # makes the padded path cost about the same as the plain one).
        xm = x * mask
        mean = xm.sum(-1, keepdim=True, dtype=torch.float32) / n
        var = ((xm * x).sum(-1, keepdim=True, dtype=torch.float32) / n - mean.square()).clamp(min=0)
        scale = self.norm.weight[None, :, None].float() * torch.rsqrt(var + self.norm.eps)
        shift = self.norm.bias[None, :, None].float() - mean * scale
        return torch.addcmul(shift.to(x.dtype), x, scale.to(x.dtype)) * mask


COMPUTE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(name: str, device: str | torch.device) -> torch.dtype:
    """`auto`: bfloat16 where the device computes it natively (CUDA with bf16, CPUs with AVX512-BF16
    or AMX: about 2.5x the float32 speed of a HuBERT forward), float32 elsewhere. Low precision
    only flips near-tie frames between neighbouring centroids (bench/RESULTS.md measures how many)."""
    if name != "auto":
        if name not in COMPUTE_DTYPES:
            raise ValueError(f"unknown dtype {name!r} (choose auto, {', '.join(COMPUTE_DTYPES)})")
        return COMPUTE_DTYPES[name]
    if torch.device(device).type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if _cpu_has_native_bf16() else torch.float32


def _cpu_has_native_bf16() -> bool:
    try:  # oneDNN's own check (AVX512-BF16 / AMX); a private op, absent from some builds
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


SLAMKIT_INPUT_PADDING = 40  # zero samples SlamKit adds on each side of the waveform before HuBERT


class HubertExtractor(FeatureExtractor):
    """Hidden layer `layer` (1-based: the output of transformer layer L, as in fairseq/textlesslib)
    of a `transformers.HubertModel`. Layers above L are dropped, so they cost nothing. The model
    runs in `dtype` (waveform normalisation stays in float32); features come out as float32.

    `input_padding` zero samples go on each side of every utterance first (SlamKit: 40, see
    megatron_slm/conventions.py). SlamKit runs the model on one zero-padded batch without an attention
    mask, so its batched features depend on the batch; here each utterance gets its own padding
    and the batch padding is masked, so every batch size gives what SlamKit gives one utterance."""

    name = "hubert"

    def __init__(self, model: "torch.nn.Module", layer: int, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32, source: str | None = None, input_padding: int = 0):
        super().__init__(device)
        if input_padding < 0:
            raise ValueError(f"input_padding must be >= 0, got {input_padding}")
        self.input_padding = int(input_padding)
        cfg = model.config
        if not 1 <= layer <= cfg.num_hidden_layers:
            raise ValueError(f"hubert layer {layer} out of range 1..{cfg.num_hidden_layers}")
        model.encoder.layers = model.encoder.layers[:layer]
        self.model = model.to(self.device, dtype).eval()
        self.layer, self.dtype, self.source = layer, dtype, source
        self.kernels, self.strides = list(cfg.conv_kernel), list(cfg.conv_stride)
        self.frame_rate = SAMPLE_RATE / math.prod(self.strides)
        self.dim = cfg.hidden_size
        self.do_normalize = bool(getattr(cfg, "do_normalize", False))
        self._gn = None
        conv0 = self.model.feature_extractor.conv_layers[0]
        if getattr(cfg, "feat_extract_norm", "group") == "group" and isinstance(getattr(conv0, "layer_norm", None), torch.nn.GroupNorm):
            self._gn = conv0.layer_norm = _MaskedGroupNorm(conv0.layer_norm)

    @classmethod
    def from_pretrained(cls, model_dir: str, layer: int, device: str | torch.device = "cpu",
                        dtype: str | torch.dtype = "auto", input_padding: int = 0) -> "HubertExtractor":
        from transformers import HubertModel

        if not os.path.isdir(model_dir):
            raise FileNotFoundError(f"hubert model dir {model_dir!r} not found (a local HF directory with config.json)")
        model = HubertModel.from_pretrained(model_dir, local_files_only=True)
        if isinstance(dtype, str):
            dtype = resolve_dtype(dtype, device)
        return cls(model, layer, device, dtype, source=os.path.abspath(model_dir), input_padding=input_padding)

    def num_frames(self, num_samples):
        n = num_samples + 2 * self.input_padding
        for k, s in zip(self.kernels, self.strides):
            n = torch.div(n - k, s, rounding_mode="floor") + 1
        return n.clamp(min=0)

    @torch.no_grad()
    def __call__(self, waves, lengths):
        waves, lengths = waves.to(self.device, torch.float32), lengths.to(self.device)
        mask = torch.arange(waves.shape[1], device=self.device)[None] < lengths[:, None]
        if self.do_normalize:  # zero mean / unit variance per utterance over valid samples
            n = lengths.clamp(min=1)[:, None].to(waves.dtype)
            mean = (waves * mask).sum(1, keepdim=True) / n
            std = torch.sqrt((((waves - mean) * mask) ** 2).sum(1, keepdim=True) / n + 1e-7)
            waves = (waves - mean) / std * mask
        if self.input_padding:  # each utterance between its own zeros: [0]*p + wave + [0]*p
            p = self.input_padding
            padded = torch.zeros(waves.shape[0], waves.shape[1] + 2 * p, dtype=waves.dtype, device=self.device)
            padded[:, p:p + waves.shape[1]] = waves * mask
            waves, lengths = padded, lengths + 2 * p
            mask = torch.arange(waves.shape[1], device=self.device)[None] < lengths[:, None]
        waves = waves.to(self.dtype)
        if self._gn is not None:
            self._gn.valid = torch.div(lengths - self.kernels[0], self.strides[0], rounding_mode="floor") + 1
        # no batch padding: no mask, exactly the unmasked forward SlamKit runs
        attention_mask = None if bool(mask.all()) else mask.long()
        try:
            out = self.model(waves, attention_mask=attention_mask, output_hidden_states=True)
        finally:
            if self._gn is not None:
                self._gn.valid = None
        feats = out.hidden_states[self.layer]
        return feats.float(), self.num_frames(lengths - 2 * self.input_padding)

    def weights_sha256(self):
        from megatron_slm.units.weights import state_dict_sha256

        return state_dict_sha256(self.model)  # the layers kept (those above `layer` make no features)

    def identity(self):
        out = {"name": self.name, "layer": self.layer, "frame_rate": self.frame_rate, "dim": self.dim,
               "model": self.source, "conv_stride": self.strides, "conv_kernel": self.kernels,
               "dtype": str(self.dtype).removeprefix("torch.")}
        if self.input_padding:  # absent = 0: sidecars written before the option stay comparable
            out["input_padding"] = self.input_padding
        return out


def build_extractor(name: str, model_dir: str | None = None, layer: int = 11, device: str | torch.device = "cpu",
                    dtype: str = "auto", compat: str = "none", **mel_kwargs) -> FeatureExtractor:
    """Factory used by the CLIs and `UnitExtractor.from_args`. `compat="slamkit"` pads the HuBERT
    input as SlamKit does (the mel extractor has no SlamKit counterpart and is unchanged)."""
    conventions.check_name(compat, "compat")
    if name == "mel":
        return MelExtractor(device=device, **mel_kwargs)
    if name == "hubert":
        if not model_dir:
            raise ValueError("the hubert extractor needs --model-dir (a local HF HubertModel directory)")
        return HubertExtractor.from_pretrained(model_dir, layer, device, dtype,
                                               input_padding=SLAMKIT_INPUT_PADDING if compat == conventions.SLAMKIT else 0)
    raise ValueError(f"unknown extractor {name!r} (choose hubert or mel)")
