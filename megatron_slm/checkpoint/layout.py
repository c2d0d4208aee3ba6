"""The run directory: where a training run or a converted checkpoint lives on disk.

    <dir>/slm_model.json                      architecture, padded vocabulary, what the ids mean
                                              (read and written by megatron_slm/models/record.py)
    <dir>/config.yaml                         the resolved run config (training runs)
    <dir>/tokenizer/                          the extended tokenizer
    <dir>/iter_0000100/                       a dist checkpoint + slm_state.json (see dist.py)
    <dir>/latest_checkpointed_iteration.txt   the newest complete checkpoint, written last

Plain files and JSON only: reading a directory's description never imports torch or Megatron.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from megatron_slm.config import ConfigError

LATEST = "latest_checkpointed_iteration.txt"
STATE = "slm_state.json"


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
