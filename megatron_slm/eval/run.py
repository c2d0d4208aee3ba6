"""One evaluation, whoever asks for it: find the benchmarks, check their units, score, summarise.

Used by `tools/eval_slm.py` (a checkpoint or HF model from disk) and by the trainer's hook
(`eval.tasks` every `eval.interval` steps), so both score the same way:

    sets = load_sets(benchmark_files(data_dir, tasks, extra_files))
    check_sets(sets, expected_unit_identity(model_dir, tokenizer_dir), vocab)
    scores = score_sets(sets, vocab, backend, reduce="mean")

The expected unit identity is what the model was trained on: `units.meta.json` in the model or
tokenizer directory, else the units recorded in the sidecars of its training datasets.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional, Sequence

from megatron_slm.eval.items import ItemError, ItemSet, read_items
from megatron_slm.unit_identity import check_unit_count, check_units, read_units_sidecar

UNITS_META_NAMES = ("units.meta.json", "tokenizer/units.meta.json")

_CACHE: dict[str, tuple[float, ItemSet]] = {}


def benchmark_files(data_dir: Optional[str], tasks: Sequence[str] = (), files: Sequence[str] = ()) -> list[tuple[str, str]]:
    """(task label, path): `<data_dir>/<task>.jsonl` for each task, then each extra item file."""
    out = [(t, os.path.join(data_dir or ".", f"{t}.jsonl")) for t in (t.strip() for t in tasks) if t]
    return out + [(os.path.splitext(os.path.basename(p))[0], p) for p in files]


def load_sets(files: Sequence[tuple[str, str]], cache: bool = False) -> list[tuple[str, ItemSet]]:
    """Read every benchmark; `cache` keeps them in memory between calls (the training hook)."""
    sets = []
    for task, path in files:
        if not os.path.isfile(path):
            raise ItemError(f"benchmark {task!r}: {path} does not exist "
                            f"(prepare it with tools/prepare_eval_data.py ... --out {path})")
        if not cache:
            sets.append((task, read_items(path)))
            continue
        mtime = os.stat(path).st_mtime
        hit = _CACHE.get(path)
        if hit is None or hit[0] != mtime:
            hit = _CACHE[path] = (mtime, read_items(path))
        sets.append((task, hit[1]))
    return sets


def has_units(items: ItemSet) -> bool:
    return any(c.units is not None for it in items.items
               for c in it.candidates() + ([it.prompt] if it.prompt else []))


def check_sets(sets: Sequence[tuple[str, ItemSet]], identity: Optional[dict], vocab, model: str = "the model",
               compare_compat: bool = True) -> bool:
    """Refuse benchmarks whose units come from another extractor/k-means than the model's.
    Returns whether the units could be checked beyond K; when the model records no unit identity
    (e.g. a released checkpoint), says so instead of passing in silence."""
    with_units = [s for _, s in sets if has_units(s)]
    for s in with_units:
        if s.unit_identity is None:
            raise ItemError(f"{s.path}: the header has no unit_identity; re-run tools/prepare_eval_data.py")
        check_unit_count(s.unit_identity, vocab.num_units, s.path, "the model vocabulary", error=ItemError)
        check_units(s.unit_identity, identity or None, s.path, model, compare_compat=compare_compat, error=ItemError)
    if with_units and not identity:
        print(f"warning: {model} records no unit identity: the benchmark units were checked for K={vocab.num_units} "
              f"only, not for the extractor and k-means (pass --units-meta <the training units' .meta.json>)",
              file=sys.stderr)
    return bool(identity) or not with_units


def resolve_compat(sets: Sequence[tuple[str, ItemSet]], requested: Optional[str], allow_mixed: bool = False) -> str:
    """The scoring convention of one eval run (megatron_slm/conventions.py): `requested`, else the one
    the benchmarks' units were made with (slamkit when none has units). ItemError when two
    benchmarks, or a benchmark and `requested`, follow different conventions, unless `allow_mixed`."""
    from megatron_slm import conventions

    found = [(f"--compat {requested}", requested)] if requested else []
    found += [(s.path, conventions.recorded(s.unit_identity)) for _, s in sets if has_units(s)]
    try:
        return conventions.check_same(found, allow_mixed, "--allow-mixed-compat") or conventions.DEFAULT
    except conventions.CompatError as e:
        raise ItemError(str(e)) from None


def score_sets(sets: Sequence[tuple[str, ItemSet]], vocab, backend, reduce: str = "mean", prefer: str = "units") -> list:
    """Per-item scores of every set, each item reported under its set's task label."""
    from megatron_slm.eval.scoring import score_items

    scores = []
    for task, s in sets:
        for it in s.items:
            it.task = task
        scores += score_items(s.items, vocab, backend, reduce=reduce, prefer=prefer)
    return scores


def accuracies(scores: Sequence) -> dict[str, float]:
    """{"<task>/accuracy": mean outcome} (ties count 0.5), the numbers the training log keeps."""
    by_task: dict[str, list[float]] = {}
    for s in scores:
        by_task.setdefault(s.task, []).append(s.outcome)
    return {f"{t}/accuracy": sum(v) / len(v) for t, v in by_task.items()}


# ----------------------------------------------------------------- the model's unit identity


def expected_unit_identity(model_dir: Optional[str], tokenizer_dir: Optional[str] = None,
                           dataset_prefixes: Optional[Sequence[str]] = None,
                           units_meta: Optional[str] = None) -> Optional[dict]:
    """The unit identity the model was trained with, or None when nothing records it."""
    from megatron_slm.models.record import read_identity

    if units_meta:
        return read_units_sidecar(units_meta, error=ItemError)
    recorded = read_identity(model_dir) if model_dir and os.path.isdir(model_dir) else None
    if recorded and recorded.get("units"):  # a run dir, converted checkpoint or HF export that says
        return recorded["units"]
    for d in (model_dir, tokenizer_dir):
        for name in UNITS_META_NAMES if d else ():
            path = os.path.join(d, name)
            if os.path.isfile(path):
                return read_units_sidecar(path, error=ItemError)
    prefixes = list(dataset_prefixes) if dataset_prefixes is not None else run_dataset_prefixes(model_dir)
    return training_units_identity(prefixes)


def training_units_identity(dataset_prefixes: Sequence[str]) -> Optional[dict]:
    """The units identity recorded in the training datasets' sidecars (`<prefix>.meta.json`)."""
    from megatron_slm.data.storage import DatasetError, units_identity_of

    try:
        return units_identity_of(list(dataset_prefixes))
    except DatasetError as e:
        raise ItemError(str(e)) from None


def run_dataset_prefixes(run_dir: Optional[str]) -> list[str]:
    """Dataset prefixes of a run directory's resolved config (<run>/config.yaml), if any."""
    import yaml

    path = Path(run_dir or "", "config.yaml")
    if not run_dir or not path.is_file():
        return []
    cfg = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return [b["path"] for b in ((cfg.get("data") or {}).get("blend") or []) if isinstance(b, dict) and b.get("path")]
