"""Spoken-LM accuracies during training.

The trainer calls, on every rank, every `eval.interval` steps (and at the end):

    from megatron_slm.eval.hook import evaluate_in_training
    accs = evaluate_in_training(models, cfg, vocab)      # {"ssc/accuracy": 0.61, ...}
    metrics.log({"eval": True, "iteration": it, **accs})  # rank 0 writes the metrics.jsonl line

`models` are this rank's model chunks (DDP-wrapped or not); the call is collective (forward-only
pipeline schedule, batches split across data-parallel ranks) and returns the same dict on every
rank. Benchmarks are read once from `<eval.data>/<task>.jsonl` and kept in memory; the models'
train/eval mode is restored afterwards.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

from megatron_slm.eval.backends import MegatronBackend
from megatron_slm.eval.items import ItemError, ItemSet, check_identity, read_items
from megatron_slm.eval.scoring import score_items

UNITS_META_NAMES = ("units.meta.json", "tokenizer/units.meta.json")

_CACHE: dict[str, tuple[float, ItemSet]] = {}


def task_path(data_dir: str, task: str) -> Path:
    return Path(data_dir) / f"{task}.jsonl"


def load_task(data_dir: str, task: str) -> ItemSet:
    path = task_path(data_dir, task)
    if not path.is_file():
        raise ItemError(f"eval.tasks has {task!r} but {path} does not exist "
                        f"(prepare it with tools/prepare_eval_data.py ... --out {path})")
    mtime = path.stat().st_mtime
    hit = _CACHE.get(str(path))
    if hit is None or hit[0] != mtime:
        hit = (mtime, read_items(path))
        _CACHE[str(path)] = hit
    return hit[1]


def model_unit_identity(*dirs: Optional[str]) -> Optional[dict]:
    """The units identity a model was trained with, if its directory records one
    (`units.meta.json` -- the sidecar of the training units -- in the run or tokenizer dir)."""
    for d in dirs:
        if not d:
            continue
        for name in UNITS_META_NAMES:
            p = os.path.join(d, name)
            if os.path.isfile(p):
                return read_units_identity(p)
    return None


def training_units_identity(dataset_prefixes: list[str]) -> Optional[dict]:
    """The units identity recorded in the training datasets' sidecars (`<prefix>.meta.json`,
    written by tools/preprocess_data.py), from the first dataset that has speech."""
    for prefix in dataset_prefixes:
        p = f"{prefix}.meta.json"
        if not os.path.isfile(p):
            continue
        try:
            with open(p, encoding="utf-8") as f:
                units = (json.load(f).get("identity") or {}).get("units")
        except (OSError, ValueError) as e:
            raise ItemError(f"{p}: unreadable dataset sidecar ({e})") from None
        if units:
            units = {k: v for k, v in units.items() if k != "sidecar"}
            if isinstance(units.get("extractor"), dict):  # paths are informational
                units["extractor"] = {k: v for k, v in units["extractor"].items() if k != "model"}
            return units
    return None


def run_dataset_prefixes(run_dir: str) -> list[str]:
    """Dataset prefixes of a run directory's resolved config (<run>/config.yaml), if any."""
    import yaml

    p = os.path.join(run_dir, "config.yaml")
    if not os.path.isfile(p):
        return []
    with open(p, encoding="utf-8") as f:
        cfg = yaml.safe_load(f) or {}
    return [b["path"] for b in ((cfg.get("data") or {}).get("blend") or []) if isinstance(b, dict) and b.get("path")]


def read_units_identity(meta_file: str) -> dict:
    """The compatibility key of a units sidecar file (`<units>.jsonl.meta.json`)."""
    from megatron_slm.units.records import compatibility_key

    try:
        with open(meta_file, encoding="utf-8") as f:
            return compatibility_key(json.load(f))
    except (OSError, ValueError, KeyError) as e:
        raise ItemError(f"{meta_file}: not a readable units sidecar ({e})") from None


def evaluate_in_training(models: list, cfg, vocab) -> dict[str, float]:
    """{"<task>/accuracy": float} for every task in cfg.eval.tasks (empty dict when none)."""
    tasks = list(cfg.eval.tasks or [])
    if not tasks:
        return {}
    if not cfg.eval.data:
        raise ItemError("eval.tasks is set but eval.data (the directory of prepared benchmarks) is not")
    identity = (model_unit_identity(cfg.checkpoint.save, cfg.data.tokenizer)
                or training_units_identity([b.path for b in cfg.data.blend]))
    backend = MegatronBackend(models, vocab, padded_vocab_size=None)
    out: dict[str, float] = {}
    for task in tasks:
        items = load_task(cfg.eval.data, task)
        if has_units(items):
            check_identity(items.unit_identity, identity, items.path, vocab.num_units)
        scores = score_items(items.items, vocab, backend, reduce=cfg.eval.score)
        out[f"{task}/accuracy"] = sum(s.outcome for s in scores) / len(scores)
    return out


def has_units(items: ItemSet) -> bool:
    return any(c.units is not None for it in items.items
               for c in it.candidates() + ([it.prompt] if it.prompt else []))
