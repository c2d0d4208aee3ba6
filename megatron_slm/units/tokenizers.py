"""One speech-tokenizer interface: audio -> discrete units (and, where the tokenizer can, units ->
audio). Three kinds today:

  hubert, mel  features (a HubertModel layer, or log-mel) quantised by one k-means: K units, one
               stream, consecutive duplicates collapsed unless --no-dedup (pipeline.UnitExtractor)
  mimi         the Mimi codec: n_q codebooks of K codes at 12.5 Hz, frames flattened in codebook
               order, never deduplicated; its decoder turns frames back into audio (mimi.py)

Every tokenizer gives `UnitRecord`s (records.py), a sidecar `meta` (its kind, settings and a hash
of its weights) and a `vocab.UnitInventory` (K x n_q units, frame rate, tokens per frame), which
vocabulary extension, interleaving, eval, generation and the vocoder read.

    tok = build_tokenizer("mimi", model_dir="/models/mimi", num_codebooks=8)
    tok.inventory.num_units, tok.inventory.tokens_per_frame     # 16384, 8
    for rec in tok.units_for_files(paths): ...
"""
from __future__ import annotations

from typing import Iterator, Optional, Protocol, Sequence

from megatron_slm import conventions

KMEANS_KINDS = ("hubert", "mel")
KINDS = KMEANS_KINDS + ("mimi",)


class SpeechTokenizer(Protocol):
    meta: dict          # the units sidecar (records.make_meta / make_codec_meta)
    skipped: list       # audio.Skipped of inputs left out, with the reason
    warnings: list      # audio.Skipped of inputs kept with a remark (silence)

    @property
    def inventory(self): ...

    def prepare(self, paths: Sequence, ids: Optional[Sequence[str]] = None) -> list: ...

    def units_for_items(self, items: Sequence) -> Iterator: ...

    def units_for_files(self, paths: Sequence, ids: Optional[Sequence[str]] = None) -> Iterator: ...


def build_tokenizer(kind: str, *, kmeans: Optional[str] = None, model_dir: Optional[str] = None, layer: int = 11,
                    num_codebooks: Optional[int] = None, device: Optional[str] = None, audio_backend: str = "auto",
                    max_batch_seconds: Optional[float] = None, num_threads: int = 2, dedup: Optional[bool] = None,
                    min_seconds: float = 0.1, max_seconds: Optional[float] = None, dtype: str = "auto",
                    streams: Optional[int] = None, compat: str = conventions.DEFAULT,
                    trust_pickle: bool = False) -> SpeechTokenizer:
    """The tokenizer of `kind`; settings that do not apply to it are refused, not ignored.
    `dedup` None: the kind's default (k-means units deduplicated, codec frames never)."""
    if kind not in KINDS:
        raise ValueError(f"unknown speech tokenizer {kind!r} (choose {', '.join(KINDS)})")
    if kind == "mimi":
        from megatron_slm.units.mimi import MimiError, MimiUnitExtractor

        if dedup:
            raise MimiError("mimi units are codec frames of n_q codes: collapsing repeated codes would break the "
                            "frames, so --dedup is refused for codecs")
        if kmeans:
            raise MimiError("--kmeans is for hubert/mel units; mimi quantises with its own codebooks")
        if num_codebooks is None:
            raise MimiError("the mimi tokenizer needs --num-codebooks (how many of its codebooks to keep, e.g. 8)")
        return MimiUnitExtractor.from_args(model_dir, num_codebooks, device, audio_backend, max_batch_seconds,
                                           num_threads, min_seconds, max_seconds, streams, compat)
    if num_codebooks not in (None, 1):
        raise ValueError(f"--num-codebooks {num_codebooks}: {kind} + k-means units have one codebook")
    from megatron_slm.units.pipeline import UnitExtractor

    return UnitExtractor.from_args(kind, kmeans, model_dir, layer, device, audio_backend, max_batch_seconds,
                                   num_threads, collapse=True if dedup is None else dedup, min_seconds=min_seconds,
                                   max_seconds=max_seconds, dtype=dtype, streams=streams, compat=compat,
                                   trust_pickle=trust_pickle)
