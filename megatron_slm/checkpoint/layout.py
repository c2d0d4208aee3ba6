"""The run directory: where a training run or a converted checkpoint lives on disk.

    <dir>/slm_model.json                      architecture, padded vocabulary, and what the model's ids
                                              mean: {"vocab": SpeechVocab.identity(), "units": units key}
    <dir>/config.yaml                         the resolved run config (training runs)
    <dir>/tokenizer/                          the extended tokenizer
    <dir>/iter_0000100/                       a dist checkpoint + slm_state.json (see dist.py)
    <dir>/latest_checkpointed_iteration.txt   the newest complete checkpoint, written last

Plain files and JSON only: reading a directory's description never imports torch or Megatron.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Optional

from megatron_slm.config import ConfigError
from megatron_slm.models.presets import ModelArch

LATEST = "latest_checkpointed_iteration.txt"
STATE = "slm_state.json"
MODEL_INFO_FILE = "slm_model.json"
# an exported HF model's record of the same identity (HF dirs have no slm_model.json)
IDENTITY_FILE = "slm_identity.json"


def iter_dir(root: str | Path, iteration: int) -> Path:
    return Path(root) / f"iter_{iteration:07d}"


def complete_iterations(root: str | Path) -> list[int]:
    """Iterations whose directory holds a finished checkpoint (state file and dist metadata)."""
    out = []
    for p in Path(root).glob("iter_???????"):
        if p.is_dir() and p.name[5:].isdigit() and (p / STATE).is_file() and (p / "metadata.json").is_file():
            out.append(int(p.name[5:]))
    return sorted(out)


def intact_checkpoints_hint(root: str | Path, exclude: Optional[int] = None) -> str:
    """Where a user can go from a broken pointer or checkpoint: the intact ones, by name."""
    intact = [i for i in complete_iterations(root) if i != exclude]
    if not intact:
        return "no other complete checkpoint is in this directory"
    names = ", ".join(iter_dir(root, i).name for i in intact[-5:])
    return f"complete checkpoints here: {names} (to resume from one, write its number into {Path(root) / LATEST})"


def latest_iteration(root: str | Path) -> int:
    path = Path(root) / LATEST
    if not path.is_file():
        raise ConfigError(f"{root}: no {LATEST} (not a checkpoint directory, or no checkpoint finished)")
    try:
        text = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: unreadable ({e}); {intact_checkpoints_hint(root)}") from None
    if not text.isdigit():
        raise ConfigError(f"{path}: expected an iteration number, found {text[:40]!r}; {intact_checkpoints_hint(root)}")
    iteration = int(text)
    if not iter_dir(root, iteration).is_dir():
        raise ConfigError(f"{path} points at iteration {iteration} but {iter_dir(root, iteration)} is missing; "
                          f"{intact_checkpoints_hint(root)}")
    return iteration


def has_checkpoint(root: Optional[str | Path]) -> bool:
    return root is not None and (Path(root) / LATEST).is_file()


def read_state(root: str | Path, iteration: Optional[int] = None) -> dict:
    iteration = latest_iteration(root) if iteration is None else iteration
    path = iter_dir(root, iteration) / STATE
    if not path.is_file():
        raise ConfigError(f"{path} is missing: incomplete checkpoint")
    return json.loads(path.read_text())


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def read_model_info(directory: str | Path) -> tuple[ModelArch, Optional[int]]:
    """The architecture (and padded vocabulary) recorded in a run or converted checkpoint dir."""
    path = Path(directory) / MODEL_INFO_FILE
    if not path.is_file():
        raise ConfigError(f"{directory}: no {MODEL_INFO_FILE} (not a megatron-slm checkpoint directory)")
    try:
        info = json.loads(path.read_text())
        return ModelArch(**info["arch"]), info.get("padded_vocab_size")
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{path}: unreadable model description ({e})") from None


def write_model_info(directory: str | Path, arch: ModelArch, padded_vocab: int, identity: Optional[dict] = None) -> None:
    """`identity`: {"vocab": ..., "units": ...} -- what the token ids mean (units None when no speech
    data has been seen, e.g. a freshly converted text LM)."""
    info = {"arch": dataclasses.asdict(arch), "padded_vocab_size": padded_vocab}
    if identity is not None:
        info["identity"] = identity
    atomic_write(Path(directory) / MODEL_INFO_FILE, json.dumps(info, indent=2))


def read_identity(directory: str | Path) -> Optional[dict]:
    """The vocabulary/units identity a run, converted checkpoint or HF export records, or None."""
    for name, key in ((MODEL_INFO_FILE, "identity"), (IDENTITY_FILE, None)):
        path = Path(directory) / name
        if path.is_file():
            try:
                info = json.loads(path.read_text())
            except ValueError as e:
                raise ConfigError(f"{path}: unreadable ({e})") from None
            identity = info.get(key) if key else info
            if identity:
                return identity
    return None


def write_identity(directory: str | Path, identity: dict) -> None:
    atomic_write(Path(directory) / IDENTITY_FILE, json.dumps(identity, indent=2))
