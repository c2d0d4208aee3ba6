"""The Mimi decoder as the vocoder of Mimi units: whole frames of the model's n_q codebooks ->
24 kHz audio, 1920 samples a frame. The directory is the one the units were extracted with: its
weights hash and settings must match the model's units identity (check_vocoder)."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from megatron_slm.generate.sampling import GenerationError


class MimiVocoder:
    compares_convention = False  # codec codes do not depend on the HuBERT-input convention

    def __init__(self, codec, source: str):
        from megatron_slm.units.records import compatibility_key, inventory, make_codec_meta

        self.codec, self.source = codec, source
        meta = make_codec_meta(codec.identity())
        self.inventory = inventory(meta)
        self.num_units = self.inventory.num_units
        self.sample_rate = codec.sample_rate
        self.unit_identity = compatibility_key(meta)

    @classmethod
    def from_dir(cls, path: str, num_codebooks: Optional[int], device: str = "cpu") -> "MimiVocoder":
        from megatron_slm.units.mimi import MimiCodec, MimiError

        if num_codebooks is None:
            raise GenerationError(f"--vocoder {path}: a Mimi vocoder needs the model's codebook count "
                                  "(its tokenizer has no unit inventory)")
        try:
            codec = MimiCodec.from_pretrained(path, num_codebooks, device)
        except MimiError as e:
            raise GenerationError(f"--vocoder {e}") from None
        return cls(codec, path)

    def __call__(self, units: Sequence[int], durations: Optional[Sequence[int]] = None,
                 speaker: Optional[str] = None) -> np.ndarray:
        """Unit indices (frames flattened in codebook order) -> float32 audio at 24 kHz."""
        from megatron_slm.vocab import VocabError

        if speaker is not None:
            raise GenerationError(f"--speaker {speaker!r}: the Mimi decoder has no speakers")
        try:
            codes = self.inventory.unflatten(units)
        except VocabError as e:
            raise GenerationError(f"Mimi vocoder: {e}") from None
        return self.codec.decode(codes)
