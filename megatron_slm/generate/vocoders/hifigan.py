"""The unit HiFi-GAN of textlesslib / SlamKit (e.g. `hifigan_lj_mhubert_base_25hz`), loaded from a
local directory: the architecture is written here, only the files come from the release.

Directory layout (textlesslib's files, any names):
  config.json   the generator config: num_embeddings (K), embedding_dim, model_in_dim,
                upsample_rates, upsample_kernel_sizes, upsample_initial_channel,
                resblock_kernel_sizes, resblock_dilation_sizes, sampling_rate (default 16000),
                optional dur_predictor_params {encoder_embed_dim, var_pred_hidden_dim,
                var_pred_kernel_size, var_pred_dropout}, multispkr + num_speakers, multistyle +
                num_styles, embedder_params + embedder_dim (speaker embedding vectors)
  generator     a torch file {"generator": state_dict} (weight-norm tensors `weight_g`/`weight_v`,
                the `parametrizations.weight.original0/1` form, or plain folded weights)
  speakers.txt  optional speaker names, one a line (so --speaker may be a name)
  units.meta.json  optional: the units sidecar of the codebook it was trained on (checked)

Units in, waveform out: each unit is embedded (optionally repeated by the duration predictor),
the speaker/style embedding is broadcast over time and concatenated, then the upsampling
generator produces prod(upsample_rates) samples per frame.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from megatron_slm.generate.sampling import GenerationError

LRELU_SLOPE = 0.1
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", "")
REQUIRED = ("num_embeddings", "embedding_dim", "upsample_rates", "upsample_kernel_sizes",
            "upsample_initial_channel", "resblock_kernel_sizes", "resblock_dilation_sizes")


def _same_padding(kernel: int, dilation: int = 1) -> int:
    return (kernel * dilation - dilation) // 2


class ResBlock(nn.Module):
    """Three (dilated conv, conv) pairs with residual connections ("resblock 1" of HiFi-GAN)."""

    def __init__(self, channels: int, kernel: int, dilations: Sequence[int]):
        super().__init__()
        self.convs1 = nn.ModuleList(nn.Conv1d(channels, channels, kernel, dilation=d, padding=_same_padding(kernel, d))
                                    for d in dilations)
        self.convs2 = nn.ModuleList(nn.Conv1d(channels, channels, kernel, padding=_same_padding(kernel))
                                    for _ in dilations)

    def forward(self, x):
        for dilated, plain in zip(self.convs1, self.convs2):
            x = x + plain(F.leaky_relu(dilated(F.leaky_relu(x, LRELU_SLOPE)), LRELU_SLOPE))
        return x


class DurationPredictor(nn.Module):
    """log(1 + frames) per unit from its embedding: two conv + layer-norm blocks and a projection
    (the second conv pads by 1 whatever its kernel, as in the released models)."""

    def __init__(self, dim: int, hidden: int, kernel: int, dropout: float = 0.0):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv1d(dim, hidden, kernel, padding=(kernel - 1) // 2), nn.ReLU())
        self.ln1 = nn.LayerNorm(hidden)
        self.conv2 = nn.Sequential(nn.Conv1d(hidden, hidden, kernel, padding=1), nn.ReLU())
        self.ln2 = nn.LayerNorm(hidden)
        self.proj = nn.Linear(hidden, 1)
        self.dropout = dropout

    def forward(self, x):  # [B, T, C] -> [B, T]
        x = F.dropout(self.ln1(self.conv1(x.transpose(1, 2)).transpose(1, 2)), self.dropout, self.training)
        x = F.dropout(self.ln2(self.conv2(x.transpose(1, 2)).transpose(1, 2)), self.dropout, self.training)
        return self.proj(x).squeeze(2)

    def frames(self, emb: torch.Tensor) -> torch.Tensor:
        """Integer frames per unit (>= 1) for [B, T, C] embeddings."""
        return torch.clamp(torch.round(torch.exp(self(emb)) - 1).long(), min=1)


class UnitHiFiGAN(nn.Module):
    """Unit embedding (+ duration, speaker, style) -> the HiFi-GAN upsampling generator."""

    def __init__(self, cfg: dict):
        super().__init__()
        missing = [k for k in REQUIRED if k not in cfg]
        if missing:
            raise GenerationError(f"HiFi-GAN config lacks {', '.join(missing)} (not a unit HiFi-GAN config)")
        if str(cfg.get("resblock", "1")) != "1":
            raise GenerationError(f"HiFi-GAN config has resblock={cfg['resblock']!r}; only resblock '1' "
                                  "(the unit vocoders' block) is implemented")
        if cfg.get("f0"):
            raise GenerationError("this HiFi-GAN is conditioned on F0 as well as units (f0: true); "
                                  "unit-only generation cannot feed it")
        self.cfg = cfg
        E, C = int(cfg["embedding_dim"]), int(cfg["upsample_initial_channel"])
        rates, kernels = cfg["upsample_rates"], cfg["upsample_kernel_sizes"]
        self.hop = int(math.prod(rates))
        self.dict = nn.Embedding(int(cfg["num_embeddings"]), E)
        self.multispkr = bool(cfg.get("multispkr"))
        self.embedder = bool(cfg.get("embedder_params"))
        if self.embedder:
            self.spkr = nn.Linear(int(cfg.get("embedder_dim", 256)), E)
        elif self.multispkr:
            self.spkr = nn.Embedding(int(cfg.get("num_speakers", 200)), E)
        self.multistyle = bool(cfg.get("multistyle"))
        if self.multistyle:
            self.style = nn.Embedding(int(cfg.get("num_styles", 100)), E)
        dp = cfg.get("dur_predictor_params")
        self.dur_predictor = (DurationPredictor(int(dp["encoder_embed_dim"]), int(dp["var_pred_hidden_dim"]),
                                                int(dp["var_pred_kernel_size"]), float(dp.get("var_pred_dropout", 0.0)))
                              if dp else None)
        self.conv_pre = nn.Conv1d(int(cfg.get("model_in_dim", 80)), C, 7, padding=3)
        self.ups = nn.ModuleList(nn.ConvTranspose1d(C // 2 ** i, C // 2 ** (i + 1), k, u, padding=(k - u) // 2)
                                 for i, (u, k) in enumerate(zip(rates, kernels)))
        self.num_kernels = len(cfg["resblock_kernel_sizes"])
        self.resblocks = nn.ModuleList(ResBlock(C // 2 ** (i + 1), k, d)
                                       for i in range(len(self.ups))
                                       for k, d in zip(cfg["resblock_kernel_sizes"], cfg["resblock_dilation_sizes"]))
        self.conv_post = nn.Conv1d(C // 2 ** len(self.ups), 1, 7, padding=3)

    @property
    def num_units(self) -> int:
        return self.dict.num_embeddings

    def upsample(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_pre(x)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, LRELU_SLOPE))
            blocks = self.resblocks[i * self.num_kernels:(i + 1) * self.num_kernels]
            x = sum(block(x) for block in blocks) / self.num_kernels
        return torch.tanh(self.conv_post(F.leaky_relu(x)))  # torch's default slope here, as released

    def forward(self, units: torch.Tensor, durations: Optional[torch.Tensor] = None, speaker=None,
                style: Optional[int] = None) -> torch.Tensor:
        """units [1, T] -> waveform [1, 1, frames x hop]. `durations` [T]: frames per unit; None
        with a duration predictor predicts them, without one each unit is one frame."""
        emb = self.dict(units)  # [1, T, E]
        if durations is None and self.dur_predictor is not None:
            durations = self.dur_predictor.frames(emb)[0]
        x = emb.transpose(1, 2)
        if durations is not None:
            x = torch.repeat_interleave(x, durations.to(x.device), dim=2)
        frames = x.shape[2]
        conds = []
        if self.multispkr or self.embedder:
            if speaker is None:
                raise GenerationError("this HiFi-GAN is multi-speaker: pass a speaker (--speaker)")
            conds.append(self.spkr(speaker.to(x.device)[None].float() if self.embedder
                                   else torch.tensor([int(speaker)], device=x.device)))
        if self.multistyle:
            conds.append(self.style(torch.tensor([int(style or 0)], device=x.device)))
        for c in conds:  # one vector per utterance, repeated over every frame
            x = torch.cat([x, c.reshape(1, -1, 1).expand(1, -1, frames)], dim=1)
        return self.upsample(x)


def fold_weight_norm(state: dict) -> dict:
    """Weight-norm pairs (g, v) -> weight = g * v / ||v|| (norm over every dim but 0, torch's default)."""
    out, pairs = {}, {}
    for key, t in state.items():
        for g_name, v_name in ((".weight_g", ".weight_v"),
                               (".parametrizations.weight.original0", ".parametrizations.weight.original1")):
            if key.endswith(g_name) or key.endswith(v_name):
                base = key[: -len(g_name)] if key.endswith(g_name) else key[: -len(v_name)]
                pairs.setdefault(base, {})["g" if key.endswith(g_name) else "v"] = t
                break
        else:
            out[key] = t
    for base, gv in pairs.items():
        if set(gv) != {"g", "v"}:
            raise GenerationError(f"generator checkpoint: weight-norm tensor {base} has only {'/'.join(gv)}")
        v = gv["v"].float()
        norm = v.flatten(1).norm(dim=1).reshape(-1, *([1] * (v.dim() - 1)))
        out[base + ".weight"] = gv["g"].float() * v / norm
    return out


def _find_files(directory: Path) -> tuple[Path, Path]:
    jsons = sorted(p for p in directory.iterdir() if p.suffix == ".json" and p.name != "units.meta.json")
    configs = [p for p in jsons if p.name == "config.json"] or [p for p in jsons if "upsample_rates" in p.read_text()]
    skip = {".json", ".txt", ".md", ".yaml", ".yml"}
    ckpts = sorted(p for p in directory.iterdir() if p.is_file() and p.suffix not in skip and p.suffix in CHECKPOINT_SUFFIXES)
    named = [p for p in ckpts if p.stem == "generator" or p.name.startswith("g_")]
    ckpts = named or ckpts
    if len(configs) != 1 or len(ckpts) != 1:
        raise GenerationError(f"{directory}: a unit HiFi-GAN directory holds one JSON config (found "
                              f"{[p.name for p in configs] or 'none'}) and one generator checkpoint (found "
                              f"{[p.name for p in ckpts] or 'none'})")
    return configs[0], ckpts[0]


class HiFiGANVocoder:
    kind = "hifigan"

    def __init__(self, model: UnitHiFiGAN, source: str, speakers: Optional[list[str]] = None,
                 unit_identity: Optional[dict] = None, device: str = "cpu"):
        self.model = model.eval().to(device)
        self.source, self.speakers, self.unit_identity = source, speakers, unit_identity
        self.sample_rate = int(model.cfg.get("sampling_rate", 16000))
        self.hop = model.hop
        self.num_units = model.num_units
        self.device = device

    @classmethod
    def from_dir(cls, directory: str, device: str = "cpu") -> "HiFiGANVocoder":
        d = Path(directory)
        config_path, ckpt_path = _find_files(d)
        try:
            cfg = json.loads(config_path.read_text())
        except ValueError as e:
            raise GenerationError(f"{config_path}: not JSON ({e})") from None
        model = UnitHiFiGAN(cfg)
        try:
            ckpt = torch.load(str(ckpt_path), map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises several types for a foreign file
            raise GenerationError(f"{ckpt_path}: not a loadable torch checkpoint ({type(e).__name__}: {e})") from None
        state = ckpt.get("generator", ckpt) if isinstance(ckpt, dict) else None
        if not isinstance(state, dict):
            raise GenerationError(f"{ckpt_path}: expected a dict with a 'generator' state dict")
        try:
            missing, unexpected = model.load_state_dict(fold_weight_norm(state), strict=False)
        except RuntimeError as e:  # shapes differ
            first = next((l.strip() for l in str(e).splitlines() if "size mismatch" in l), str(e)[:200])
            raise GenerationError(f"{ckpt_path}: does not match {config_path.name} ({first})") from None
        if missing or unexpected:
            raise GenerationError(f"{ckpt_path}: does not match {config_path.name} (missing {missing[:4]}, "
                                  f"unexpected {unexpected[:4]})")
        speakers = None
        if (d / "speakers.txt").is_file():
            speakers = [s.strip() for s in (d / "speakers.txt").read_text().splitlines() if s.strip()]
        ident = None
        if (d / "units.meta.json").is_file():
            from megatron_slm.unit_identity import read_units_sidecar

            ident = read_units_sidecar(str(d / "units.meta.json"), error=GenerationError)
        return cls(model, os.path.abspath(directory), speakers, ident, device)

    def speaker_index(self, speaker: Optional[str]):
        if not (self.model.multispkr or self.model.embedder):
            return None
        if self.model.embedder:
            if speaker is None or not os.path.isfile(speaker):
                raise GenerationError(f"{self.source}: this vocoder takes a speaker embedding vector: "
                                      "pass --speaker path/to/embedding.npy")
            return torch.from_numpy(np.load(speaker).astype(np.float32).reshape(-1))
        if speaker is None:
            return 0
        if speaker.isdigit():
            return int(speaker)
        if self.speakers and speaker in self.speakers:
            return self.speakers.index(speaker)
        raise GenerationError(f"{self.source}: unknown speaker {speaker!r}"
                              + (f" (speakers.txt has {len(self.speakers)})" if self.speakers else ""))

    @torch.no_grad()
    def __call__(self, units: Sequence[int], durations: Optional[Sequence[int]] = None,
                 speaker: Optional[str] = None) -> np.ndarray:
        u = torch.as_tensor(list(units), dtype=torch.long, device=self.device)[None]
        d = torch.as_tensor(list(durations), dtype=torch.long) if durations is not None else None
        wav = self.model(u, d, speaker=self.speaker_index(speaker))
        return wav.reshape(-1).float().cpu().numpy()
