"""A launch into a run directory that already holds a checkpoint continues that run.

    check_relaunch(cfg)                       # in the run plan, before anything is built
    done = end_of_run_logged(run_dir, step)   # the trainer: a finished run appends nothing

The run's `config.yaml` records what produced its checkpoints and metrics. A relaunch may change
only the keys below, which decide how a run is observed, sliced into jobs or laid out on
devices, never what it computes. Everything else -- the model, data, optimizer and schedule,
`train.iters` / `train.token_budget` (the LR schedule decays over the planned steps, so the steps
already taken were made for another length), validation size, benchmarks -- is refused naming
each differing key: continuing the weights under another config is a new run
(`checkpoint.load=<run>` with a new `checkpoint.save`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import yaml

# A key is free to change when it equals one of these or lies under one ending in ".".
MAY_CHANGE = (
    "logging.",                     # how often and where metrics go
    "runtime.",                     # device choice, backend, collective timeout
    "parallel.",                    # layout: dist checkpoints reshard on load (same math, other reduction order)
    "checkpoint.interval", "checkpoint.keep_last", "checkpoint.async_save",
    "train.eval_interval",          # extra validation lines; the training steps are the same
    "train.exit_interval", "train.exit_duration_minutes", "train.exit_on_signal",
    "train.nan_policy", "train.max_skipped_steps",  # what to do if a loss goes non-finite
    "eval.interval",
    "data.num_workers", "data.cache_dir",  # index caches are rebuilt identically
)
CONFIG_FILE = "config.yaml"


def may_change(key: str) -> bool:
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in MAY_CHANGE)


def _flatten(tree, prefix: str = "") -> dict:
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: tree}


def changed_keys(recorded: dict, current: dict) -> list[tuple[str, object, object]]:
    """(key, recorded value, new value) for every result-changing key that differs."""
    a, b = _flatten(recorded), _flatten(current)
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k) and not may_change(k) and k != "checkpoint.save"]


def recorded_config(run_dir: str | Path):
    """The config a run directory records (None when it has none), parsed by today's schema so
    that keys added since then take their defaults."""
    from megatron_slm.config import ConfigError, from_dict

    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        return from_dict(yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    except (yaml.YAMLError, UnicodeDecodeError, ConfigError) as e:
        raise ConfigError(f"{path}: the run's recorded config is unreadable ({e}); "
                          f"resume needs it to check what this launch changes") from None


def check_relaunch(cfg) -> None:
    """Refuse a launch into a run with a checkpoint whose config differs where results differ."""
    from megatron_slm.checkpoint.layout import has_checkpoint
    from megatron_slm.config import ConfigError, absolute_paths

    run_dir = cfg.checkpoint.save
    if not has_checkpoint(run_dir):
        return
    recorded = recorded_config(run_dir)
    if recorded is None:
        return
    diff = changed_keys(recorded.to_dict(), absolute_paths(cfg).to_dict())
    if not diff:
        return
    shown = "; ".join(f"{k}: {old!r} -> {new!r}" for k, old, new in diff[:8])
    more = f" (and {len(diff) - 8} more)" if len(diff) > 8 else ""
    raise ConfigError(
        f"checkpoint.save={run_dir} holds a run made with another config, so relaunching it would mix "
        f"results: {shown}{more}. A relaunch may change only {', '.join(k + ('*' if k.endswith('.') else '') for k in MAY_CHANGE)}. "
        f"Relaunch with the run's own config ({Path(run_dir) / CONFIG_FILE}), or start a new run directory "
        f"from these weights with checkpoint.load={run_dir}")


def end_of_run_logged(run_dir: str | Path, iteration: int, kinds: tuple[str, ...]) -> bool:
    """Whether metrics.jsonl already holds a record of each of `kinds` ("validation", "eval") at
    `iteration`: then a relaunch of the finished run has nothing to add."""
    import json

    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return False
    found = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict) and obj.get("iteration") == iteration:
            found.update(k for k in kinds if obj.get(k))
    return found == set(kinds)


def nothing_to_do_message(iteration: Optional[int]) -> str:
    return (f"[train] the run is already complete at step {iteration} and its final validation is logged: "
            f"nothing to do (to train longer, start a new run with checkpoint.load=<this run>)")
