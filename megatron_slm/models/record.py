"""`slm_model.json`: what a run or converted checkpoint directory says about its model.

    {"arch": ModelArch fields, "padded_vocab_size": rows of the saved embedding,
     "identity": {"vocab": SpeechVocab.identity(), "units": units key or null}}

The one reader and writer of this file (and of `slm_identity.json`, the same identity beside an
exported HF model, which has no slm_model.json). Plain JSON: reading it never imports torch or
Megatron, and it sits below both the model provider and the checkpoint code that use it.

`padded_vocab_size` records the padding the model was built with; a loader re-pads to its own
tensor-parallel size (`checkpoint/dist.py` reads the rows actually stored), so it is a record,
not a constraint.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from megatron_slm.config import ConfigError
from megatron_slm.jsonio import atomic_write
from megatron_slm.models.arch import ModelArch

MODEL_FILE = "slm_model.json"
IDENTITY_FILE = "slm_identity.json"  # an exported HF model's record of the same identity


@dataclass(frozen=True)
class ModelRecord:
    arch: ModelArch
    padded_vocab_size: Optional[int]
    identity: Optional[dict]  # what the ids mean; None before any tokenizer was attached


def has_model_record(directory: Optional[str | Path]) -> bool:
    return directory is not None and (Path(directory) / MODEL_FILE).is_file()


def read_model_record(directory: str | Path) -> ModelRecord:
    """The record of a run or converted checkpoint dir; one clear ConfigError line if unusable."""
    path = Path(directory) / MODEL_FILE
    if not path.is_file():
        raise ConfigError(f"{directory}: no {MODEL_FILE} (not a megatron-slm checkpoint directory)")
    try:
        info = json.loads(path.read_text())
        fields = dict(info["arch"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: unreadable model description ({type(e).__name__}: {e})") from None
    unknown = set(fields) - {f.name for f in dataclasses.fields(ModelArch)}
    if unknown:
        raise ConfigError(f"{path}: field 'arch' has unknown key(s) {', '.join(sorted(unknown))}")
    try:
        arch = ModelArch(**fields)
    except TypeError as e:
        raise ConfigError(f"{path}: field 'arch': {e}") from None
    padded = info.get("padded_vocab_size")
    if padded is not None and (isinstance(padded, bool) or not isinstance(padded, int) or padded < arch.vocab_size):
        raise ConfigError(f"{path}: field 'padded_vocab_size' must be an integer >= vocab_size {arch.vocab_size}, "
                          f"found {padded!r}")
    identity = info.get("identity")
    return ModelRecord(arch, padded, identity or None)


def write_model_record(directory: str | Path, arch: ModelArch, padded_vocab_size: int,
                       identity: Optional[dict] = None) -> None:
    """`identity`: {"vocab": ..., "units": ...} (units None when no speech data has been seen,
    e.g. a freshly converted text LM)."""
    info = {"arch": dataclasses.asdict(arch), "padded_vocab_size": padded_vocab_size}
    if identity is not None:
        info["identity"] = identity
    atomic_write(Path(directory) / MODEL_FILE, json.dumps(info, indent=2))


def read_identity(directory: str | Path) -> Optional[dict]:
    """The vocabulary/units identity a run, converted checkpoint or HF export records, or None."""
    for name, key in ((MODEL_FILE, "identity"), (IDENTITY_FILE, None)):
        path = Path(directory) / name
        if path.is_file():
            try:
                info = json.loads(path.read_text())
            except (ValueError, UnicodeDecodeError) as e:
                raise ConfigError(f"{path}: unreadable ({e})") from None
            identity = info.get(key) if key else info
            if identity:
                return identity
    return None


def write_identity(directory: str | Path, identity: dict) -> None:
    atomic_write(Path(directory) / IDENTITY_FILE, json.dumps(identity, indent=2))
