"""The sweep results table (one row per run) and its validation.

`collect` writes it, `fit` and `plot` read it. Reading is strict: a missing column, a
non-numeric or non-positive value is a `ResultsError` naming the file, the row (1-based
data row, plus the run name) and the column, so a bad run is found without a traceback.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

# Columns every results table has (collect writes them first, in this order).
CORE_COLUMNS = ("run", "params", "non_embedding_params", "tokens", "compute", "loss")


class ResultsError(ValueError):
    """Bad or insufficient sweep results; the message names file, row and column."""


def write_results(path: str | Path, rows: Sequence[dict], first: Sequence[str] = CORE_COLUMNS) -> list[str]:
    """Write rows as CSV; columns = `first` then every other key seen, in first-seen order."""
    columns = list(first)
    for row in rows:
        columns += [k for k in row if k not in columns]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _fmt(row.get(k)) for k in columns})
    tmp.replace(path)  # never leave a half-written table behind
    return columns


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(int(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return repr(float(value))  # round-trips exactly
    return str(value)


class Results:
    """A read results table with typed, validated column access."""

    def __init__(self, path: str | Path, rows: list[dict], columns: list[str]):
        self.path = Path(path)
        self.rows = rows
        self.columns = columns

    def __len__(self) -> int:
        return len(self.rows)

    def _where(self, i: int) -> str:
        run = self.rows[i].get("run") or "?"
        return f"{self.path} row {i + 1} (run {run!r})"

    def require(self, *names: str) -> None:
        missing = [n for n in names if n not in self.columns]
        if missing:
            raise ResultsError(f"{self.path}: missing column {', '.join(map(repr, missing))} "
                               f"(has: {', '.join(self.columns)})")

    def has(self, name: str) -> bool:
        """True when the column exists and at least one row has a value in it."""
        return name in self.columns and any(r.get(name, "") != "" for r in self.rows)

    def numbers(self, name: str, positive: bool = True, allow_empty: bool = False) -> np.ndarray:
        """The column as float64; empty cells -> NaN when `allow_empty`, else an error."""
        self.require(name)
        out = np.empty(len(self.rows))
        for i, row in enumerate(self.rows):
            text = (row.get(name) or "").strip()
            if text == "":
                if allow_empty:
                    out[i] = math.nan
                    continue
                raise ResultsError(f"{self._where(i)}: column {name!r} is empty")
            try:
                value = float(text)
            except ValueError:
                raise ResultsError(f"{self._where(i)}: column {name!r} = {text!r} is not a number") from None
            if not math.isfinite(value) or abs(value) > MAX_VALUE:
                raise ResultsError(f"{self._where(i)}: column {name!r} = {text!r} is not finite or beyond "
                                   f"{MAX_VALUE:g} (compute = 6 N D and the fits' powers would overflow)")
            if positive and value <= 0:
                raise ResultsError(f"{self._where(i)}: column {name!r} = {text!r} must be positive")
            out[i] = value
        return out

    def strings(self, name: str) -> list[str]:
        self.require(name)
        return [(r.get(name) or "") for r in self.rows]

    def metric_columns(self) -> list[str]:
        """Downstream metric columns (e.g. `ssc/accuracy`) that have at least one value."""
        return [c for c in self.columns if c.endswith("/accuracy") and self.has(c)]


MAX_VALUE = 1e60  # far above any real budget; keeps 6 N D and squared logs finite


def read_results(path: str | Path) -> Results:
    path = Path(path)
    if not path.is_file():
        raise ResultsError(f"{path}: results file does not exist (run `tools/scaling.py collect` first)")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames:
            raise ResultsError(f"{path}: empty file, expected a CSV header with columns {', '.join(CORE_COLUMNS)}")
        columns = [c.strip() for c in reader.fieldnames]
        rows = []
        for row in reader:
            if None in row:  # more cells than header columns
                raise ResultsError(f"{path} row {len(rows) + 1}: more cells than header columns")
            rows.append({k.strip(): (v or "") for k, v in row.items()})
    first: dict[str, int] = {}
    for i, row in enumerate(rows):  # a run counted twice would weigh double in every fit
        run = row.get("run", "").strip()
        if run and first.setdefault(run, i) != i:
            raise ResultsError(f"{path} row {i + 1}: run {run!r} is already row {first[run] + 1} (a duplicate row)")
    return Results(path, rows, columns)


def need_points(results: Results, count: int, minimum: int, what: str) -> None:
    if count < minimum:
        raise ResultsError(f"{results.path}: {count} usable runs, {what} needs at least {minimum}")


def group_isoflop(compute: np.ndarray, budget: Optional[np.ndarray] = None, rel_tol: float = 0.2) -> list[np.ndarray]:
    """Indices of runs that share a compute budget (an isoFLOP set), smallest budget first.

    With a `budget` column (written when `collect --plan` joins the sweep plan) runs are
    grouped by it exactly; otherwise by actual compute, a new set starting where compute
    exceeds the set's smallest by more than `rel_tol` (token budgets round to whole steps,
    so a planned set's computes differ by a few percent, budgets by 2x or more).
    """
    if budget is not None and not np.isnan(budget).any():
        keys = np.unique(budget)
        return [np.flatnonzero(budget == k) for k in keys]
    order = np.argsort(compute)
    groups: list[list[int]] = []
    start = None
    for i in order:
        if start is None or compute[i] > start * (1 + rel_tol):
            groups.append([])
            start = compute[i]
        groups[-1].append(int(i))
    return [np.array(g) for g in groups]
