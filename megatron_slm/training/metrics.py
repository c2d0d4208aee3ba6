"""Metrics sinks: console, `metrics.jsonl`, TensorBoard and (optionally) Weights & Biases.

Only global rank 0 writes. Every record is one JSON object per line so that runs can be
collected by tools (scaling `collect`, plots) without parsing logs.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

from megatron_slm.config import LoggingConfig
from megatron_slm.console import metric


def drop_after(path: Path, iteration: int) -> int:
    """Remove the lines of steps after `iteration` (logged after the checkpoint a run resumes
    from: those steps run again), so every iteration appears once. Returns how many went."""
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            step = obj.get("iteration") if isinstance(obj, dict) else None
        except ValueError:  # a line cut short by a kill: the step is redone
            dropped += 1
            continue
        if isinstance(step, int) and step > iteration:
            dropped += 1
        else:
            kept.append(line if line.endswith("\n") else line + "\n")
    if dropped:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(kept), encoding="utf-8")
        tmp.replace(path)
    return dropped


class MetricsLogger:
    def __init__(self, run_dir: Path, cfg: LoggingConfig, enabled: bool, run_config: Optional[dict] = None,
                 resume_iteration: Optional[int] = None):
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.jsonl"
        self.tb = None
        self.wandb = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_iteration is not None:
            drop_after(self.path, resume_iteration)
        self._file = open(self.path, "a", buffering=1)
        if cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))
            except ImportError:
                print("[metrics] tensorboard is not installed; TensorBoard logging is off", flush=True)
        if cfg.wandb_project:
            try:
                import wandb

                self.wandb = wandb.init(project=cfg.wandb_project, config=run_config, dir=str(run_dir))
            except ImportError:
                print("[metrics] wandb is not installed; W&B logging is off", flush=True)

    def log(self, record: dict, console_keys: tuple = ()) -> None:
        if not self.enabled:
            return
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        self._file.write(json.dumps(clean) + "\n")
        step = record.get("iteration", 0)
        prefix = "valid/" if record.get("validation") else ("eval/" if record.get("eval") else "train/")
        for key, value in record.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "iteration":
                if self.tb is not None:
                    self.tb.add_scalar(prefix + key, value, step)
        if self.wandb is not None:
            self.wandb.log({prefix + k: v for k, v in record.items() if isinstance(v, (int, float))}, step=step)
        keys = console_keys or tuple(k for k in record if k not in ("validation", "eval"))
        tag = "validation" if record.get("validation") else ("eval" if record.get("eval") else "train")
        parts = [metric(k, record[k]) for k in keys if k in record and record[k] is not None]
        print(f"[{tag}] " + " | ".join(parts), flush=True)

    def message(self, text: str) -> None:
        if self.enabled:
            print(text, flush=True)

    def close(self) -> None:
        if not self.enabled:
            return
        self._file.close()
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()
