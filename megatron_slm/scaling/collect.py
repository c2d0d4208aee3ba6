"""Collect trained runs into the results table: one row per run directory.

A run directory is what `pretrain_slm.py` writes to `checkpoint.save` (docs/internals.md):
`config.yaml`, `slm_model.json`, `metrics.jsonl`. A row holds

* `params`, `non_embedding_params` -- counted from the architecture in slm_model.json,
* `tokens` -- consumed tokens at the final validation, `compute` = 6 * params * tokens and
  `compute_detailed` = the per-token FLOPs formula (attention and output layer) * tokens,
* `loss` -- the final validation lm_loss, plus the other final validation losses
  (`speech_loss`, `text_loss`, `<dataset>/lm_loss`), per-modality token counts when the
  trainer logs them, and the latest value of every downstream metric (`<task>/accuracy`).

A sweep is messy: runs that have not started, crashed or are still training are skipped and
counted with the reason (`include_incomplete` keeps unfinished ones, flagged `complete=0`).
"""
from __future__ import annotations

import dataclasses
import glob
import json
import math
from pathlib import Path
from typing import Optional, Sequence

import yaml

from megatron_slm.config import ConfigError, from_dict
from megatron_slm.models.flops import param_counts, training_flops_per_token
from megatron_slm.models.arch import ModelArch

RUN_FILES = ("config.yaml", "slm_model.json", "metrics.jsonl")


class RunSkipped(Exception):
    """This directory is not a usable finished run; str() is the reason."""


def _read_arch(run_dir: Path) -> ModelArch:
    from megatron_slm.models.record import read_model_record

    try:
        return read_model_record(run_dir).arch
    except ConfigError as e:
        raise RunSkipped(str(e)) from None


def read_metrics(path: Path) -> tuple[list[dict], list[dict], list[dict]]:
    """(training, validation, eval) lines of a metrics.jsonl; a bad line names its number."""
    train, valid, evals = [], [], []
    with path.open() as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                raise RunSkipped(f"{path.name} line {lineno}: not valid JSON") from None
            if not isinstance(rec, dict):
                raise RunSkipped(f"{path.name} line {lineno}: not a JSON object")
            (valid if rec.get("validation") else evals if rec.get("eval") else train).append(rec)
    return train, valid, evals


def _number(rec: dict, key: str, where: str) -> float:
    value = rec.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RunSkipped(f"{where}: field {key!r} = {value!r} is not a finite number")
    return float(value)


def collect_run(run_dir: str | Path, include_incomplete: bool = False) -> dict:
    """One results row for a run directory, or RunSkipped with the reason."""
    run_dir = Path(run_dir)
    missing = [f for f in RUN_FILES if not (run_dir / f).is_file()]
    if missing:
        raise RunSkipped(f"missing {', '.join(missing)}")
    try:
        cfg = from_dict(yaml.safe_load((run_dir / "config.yaml").read_text()) or {})
    except (ConfigError, yaml.YAMLError) as e:
        raise RunSkipped(f"config.yaml: {e}") from None
    arch = _read_arch(run_dir)
    train, valid, evals = read_metrics(run_dir / "metrics.jsonl")
    if not valid:
        raise RunSkipped(f"metrics.jsonl has no validation line ({len(train)} training lines)")
    final = valid[-1]
    where = f"metrics.jsonl validation at iteration {final.get('iteration')}"
    iteration = int(_number(final, "iteration", where))
    tokens = _number(final, "consumed_tokens", where)
    loss = _number(final, "lm_loss", where)
    if tokens <= 0 or loss <= 0:
        raise RunSkipped(f"{where}: consumed_tokens={tokens:g}, lm_loss={loss:g} must be positive")

    t = cfg.train
    planned = t.iters if t.iters is not None else (
        math.ceil(t.token_budget / (t.global_batch_size * t.seq_length)) if t.token_budget else None)
    complete = planned is None or iteration >= planned
    if not complete and not include_incomplete:
        raise RunSkipped(f"incomplete: last validation at step {iteration} of {planned}")

    counts = param_counts(arch)
    row: dict = {
        "run": run_dir.name,
        "params": counts.total,
        "non_embedding_params": counts.non_embedding,
        "tokens": int(tokens),
        "compute": 6.0 * counts.total * tokens,
        "loss": loss,
        "compute_detailed": training_flops_per_token(arch, t.seq_length) * tokens,
        "non_embedding_compute": 6.0 * counts.non_embedding * tokens,
        "iteration": iteration,
        "planned_iters": planned,
        "complete": int(complete),
        "preset": cfg.model.preset or "",
        "family": arch.family,
        "num_layers": arch.num_layers,
        "hidden_size": arch.hidden_size,
        "seq_length": t.seq_length,
        "global_batch_size": t.global_batch_size,
        "lr": cfg.optimizer.lr,
    }
    for key, value in final.items():  # per-modality and per-dataset validation losses
        if key != "lm_loss" and (key.endswith("_loss") or key.endswith("/lm_loss")) and _finite(value):
            row[key] = float(value)
    if len(cfg.data.blend) == 1:
        # the trainer logs `<dataset>/lm_loss` only for blends; a one-dataset run's loss is that
        # dataset's, so sweeps over different blends (e.g. speech-only vs interleaved) share a column
        row.setdefault(f"{_dataset_name(cfg.data.blend[0])}/lm_loss", loss)
    if train:  # per-modality token counts, when the trainer logs them
        for key, value in train[-1].items():
            if key.startswith("consumed_") and key.endswith("_tokens") and key != "consumed_tokens" and _finite(value):
                row[key.removeprefix("consumed_")] = int(value)
    for rec in evals:  # the latest value of every downstream metric
        for key, value in rec.items():
            if key.endswith("/accuracy") and _finite(value):
                row[key] = float(value)
    row["path"] = str(run_dir.resolve())
    return row


def _dataset_name(entry) -> str:
    """The name data/blend.py gives a blend entry's validation loss: `name`, else the file stem."""
    path = entry.path[:-4] if entry.path.endswith((".bin", ".idx")) else entry.path
    return entry.name or Path(path).name


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclasses.dataclass
class Collected:
    rows: list[dict]
    skipped: list[tuple[str, str]]  # (path, reason)
    unmatched: list[str]  # patterns that matched no directory


def collect_runs(patterns: Sequence[str], budgets: Optional[dict[str, float]] = None,
                 include_incomplete: bool = False, progress: bool = False) -> Collected:
    """Rows for every directory the glob patterns match (sorted, de-duplicated)."""
    from tqdm import tqdm

    dirs, unmatched = [], []
    for pattern in patterns:
        found = sorted(p for p in glob.glob(pattern) if Path(p).is_dir())
        if not found:
            unmatched.append(pattern)
        dirs += [d for d in found if d not in dirs]
    rows, skipped = [], []
    for d in tqdm(dirs, desc="collect", unit="run", disable=not progress):
        try:
            row = collect_run(d, include_incomplete)
        except RunSkipped as e:
            skipped.append((d, str(e)))
            continue
        if budgets is not None:
            if row["run"] not in budgets:
                skipped.append((d, "not in the plan (--plan)"))
                continue
            row["budget"] = budgets[row["run"]]
        rows.append(row)
    return Collected(rows, skipped, unmatched)
