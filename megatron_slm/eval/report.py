"""Item scores -> accuracies: per task, per part (SALMon parts, sBLIMP phenomena, sWUGGY
in-vocabulary/OOV), with percentile-bootstrap 95% confidence intervals; JSON and a text table.

Accuracy = mean over items of the outcome (1 win, 0 loss, ties share: 0.5 with one negative),
i.e. P(LL(pos) > LL(neg)) with ties counted 0.5, as in ZeroSpeech 2021 and SlamKit.
"""
from __future__ import annotations

import json
from collections import defaultdict
from typing import Optional, Sequence

import numpy as np

from megatron_slm.eval.benchmarks import zerospeech
from megatron_slm.eval.scoring import ItemScore


def bootstrap_ci(outcomes: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap over items (resampled with replacement)."""
    if outcomes.size == 0 or n_boot <= 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for b in range(0, n_boot, 256):  # chunked so big benchmarks don't allocate n_boot x n at once
        k = min(256, n_boot - b)
        means[b:b + k] = outcomes[rng.integers(0, outcomes.size, size=(k, outcomes.size))].mean(1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def summarize(scores: Sequence[ItemScore], n_boot: int = 1000, seed: int = 0) -> dict:
    """{task: {accuracy, ci95, n, parts: {part: {accuracy, ci95, n}}}}."""
    by_task: dict[str, list[ItemScore]] = defaultdict(list)
    for s in scores:
        by_task[s.task].append(s)
    out: dict[str, dict] = {}
    for task, items in sorted(by_task.items()):
        outcomes = np.asarray([s.outcome for s in items])
        entry = {"accuracy": float(outcomes.mean()), "ci95": list(bootstrap_ci(outcomes, n_boot, seed)),
                 "n": int(outcomes.size), "ties": int(sum(1 for s in items if 0 < s.outcome < 1))}
        parts: dict[str, list[float]] = defaultdict(list)
        for s in items:
            if s.part is not None:
                parts[s.part].append(s.outcome)
        if parts:
            entry["parts"] = {}
            for part, vals in sorted(parts.items()):
                arr = np.asarray(vals)
                entry["parts"][part] = {"accuracy": float(arr.mean()), "ci95": list(bootstrap_ci(arr, n_boot, seed)),
                                        "n": int(arr.size)}
        out[task] = entry
    return out


def _cells(name: str, e: dict) -> tuple[str, str, str, str]:
    """Accuracy rows in %; generative rows (entries with a "metric": genppl, autobleu) as values."""
    if "metric" in e:
        lo, hi = e["ci95"]
        label = name if name == e["metric"] else f"{name} [{e['metric']}]"
        return label, str(e["n"]), f"{e['value']:.4g}", f"[{lo:.4g}, {hi:.4g}]"
    return name, str(e["n"]), f"{100 * e['accuracy']:.2f}", f"[{100 * e['ci95'][0]:.1f}, {100 * e['ci95'][1]:.1f}]"


def table(summary: dict) -> str:
    """A fixed-width text table: one row per task, indented rows for its parts."""
    rows = [("task", "n", "score", "95% CI")]
    for task, e in summary.items():
        rows.append(_cells(task, e))
        for part, p in e.get("parts", {}).items():
            label, *rest = _cells(part, p)
            rows.append((f"  {label}", *rest))
        rows += zerospeech.table_rows(e)  # the official aggregation, under the per-pair accuracy
    widths = [max(len(r[c]) for r in rows) for c in range(4)]
    lines = ["  ".join(r[c].ljust(widths[c]) if c == 0 else r[c].rjust(widths[c]) for c in range(4)) for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def write_report(path: str, summary: dict, settings: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"settings": settings, "tasks": summary}, f, indent=2)


def write_item_scores(path: str, scores: Sequence[ItemScore], extra_rows: Sequence[dict] = ()) -> None:
    """Per-item log-likelihoods (JSONL): for comparing backends or models item by item; `extra_rows`
    (generative tasks: transcript, NLL, Auto-BLEU per continuation) follow as they are."""
    with open(path, "w", encoding="utf-8") as f:
        for s in scores:
            f.write(json.dumps({"id": s.id, "task": s.task, "part": s.part, "positive": s.positive,
                                "negatives": s.negatives, "outcome": s.outcome}) + "\n")
        for row in extra_rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def accuracies(summary: dict, prefix: Optional[str] = None) -> dict[str, float]:
    """Flat {"<task>/accuracy": x} (the metrics.jsonl form)."""
    return {f"{prefix or ''}{task}/accuracy": e["accuracy"] for task, e in summary.items() if "accuracy" in e}
