"""Unit -> waveform vocoders (docs/generate.md):

  hifigan     the unit HiFi-GAN of textlesslib / SlamKit: a directory with the generator
              checkpoint and its JSON config (optional duration predictor, speakers)
  griffinlim  log-mel units (the `mel` extractor): codebook centroids as log-mel frames,
              inverted with NNLS + Griffin-Lim; made from a units file or its sidecar
  mimi        Mimi units: the codec's own decoder (a MimiModel directory, the one the units
              were extracted with), whole frames -> 24 kHz

    vocoder = load_vocoder("/models/hifigan_mhubert_25hz")      # or "corpus/units.jsonl"
    check_vocoder(vocoder, vocab.num_units, model_unit_identity, where="--vocoder")
    wav = vocoder(units)                                         # float32 [samples] at vocoder.sample_rate
    write_wav("out.wav", wav, vocoder.sample_rate)
"""
from __future__ import annotations

import os
import wave
from typing import Optional

import numpy as np

from megatron_slm.generate.sampling import GenerationError


def load_vocoder(path: str, device: str = "cpu", inventory=None):
    """A directory -> unit HiFi-GAN, or the Mimi decoder when it holds a MimiModel (taking the
    model's `inventory`: how many codebooks); a units JSONL or its .meta.json -> codebook Griffin-Lim."""
    if os.path.isdir(path) and _is_mimi_dir(path):
        from megatron_slm.generate.vocoders.mimi import MimiVocoder

        return MimiVocoder.from_dir(path, inventory.num_codebooks if inventory is not None else None, device)
    if os.path.isdir(path):
        from megatron_slm.generate.vocoders.hifigan import HiFiGANVocoder

        return HiFiGANVocoder.from_dir(path, device=device)
    if os.path.isfile(path) and (path.endswith(".jsonl") or path.endswith(".meta.json")):
        from megatron_slm.generate.vocoders.griffinlim import CodebookGriffinLim

        return CodebookGriffinLim.from_units_file(path)
    raise GenerationError(f"--vocoder {path}: expected a unit HiFi-GAN directory (checkpoint + JSON config) or a "
                          "units file (.jsonl with its .meta.json sidecar) of log-mel units for Griffin-Lim")


def _is_mimi_dir(path: str) -> bool:
    import json

    try:
        with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
            return json.load(f).get("model_type") == "mimi"
    except (OSError, ValueError, AttributeError):
        return False


def check_vocoder(vocoder, num_units: int, model_identity: Optional[dict], where: str = "--vocoder") -> None:
    """Refuse a vocoder made for another codebook (or codec) than the model's units."""
    if vocoder.num_units != num_units:
        raise GenerationError(f"{where} {vocoder.source}: the vocoder takes K={vocoder.num_units} units but the "
                              f"model vocabulary has K={num_units}")
    from megatron_slm.unit_identity import check_units

    check_units(getattr(vocoder, "unit_identity", None) or None, model_identity or None, f"{where} {vocoder.source}",
                "the model", compare_compat=getattr(vocoder, "compares_convention", True), error=GenerationError)


def write_wav(path: str, wav: np.ndarray, sample_rate: int) -> None:
    """16-bit PCM mono WAV (the standard library writes it: no audio package needed)."""
    pcm = (np.clip(np.asarray(wav, dtype=np.float32), -1.0, 1.0) * 32767.0).round().astype("<i2")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with wave.open(tmp, "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(int(sample_rate))
        f.writeframes(pcm.tobytes())
    os.replace(tmp, path)
