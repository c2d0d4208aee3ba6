"""What a person reads on the console: known-harmless warnings filtered once, numbers with sensible precision.

`quiet_known_warnings()` runs when a command starts (megatron_slm.commands and megatron_slm.train
import it). It hides, by message, only warnings that say nothing about the user's run: the
Apex/Transformer Engine fallbacks of a CPU or TE-less install and deprecations raised inside
megatron-core and torch's checkpoint internals. `SLM_VERBOSE=1` shows everything.
"""
from __future__ import annotations

import math
import os
import warnings

VERBOSE_ENV = "SLM_VERBOSE"

# (message regex, category): matched at the start of the warning text, as `warnings` does
KNOWN_HARMLESS = (
    (r".*Transformer Engine and Apex are not installed", UserWarning),
    (r".*(Apex|apex) is not installed", UserWarning),
    (r".*transformer.engine.* not (installed|found|available)", UserWarning),
    (r".*Please use DTensor instead and we are deprecating ShardedTensor", FutureWarning),
    (r".*`load_state_dict` is deprecated and will be removed", FutureWarning),
    (r".*`save_state_dict` is deprecated and will be removed", FutureWarning),
    (r".*torch\.distributed\.reduce_op.* is deprecated", FutureWarning),
    (r".*`torch\.distributed\.all_gather_into_tensor` is deprecated", FutureWarning),  # raised for megatron-core's gather
    (r".*pad token id.*", UserWarning),
    (r"full scope is deprecated", UserWarning),  # megatron-core's own default for cuda_graph_scope  # Megatron's GPTDataset without a pad token: we mask by position
)
DEPRECATIONS_FROM = r"(megatron\.core|torch\.distributed\.checkpoint)(\..*)?"


# only said of GPU runs: on the CPU there is no CUDA connection to tune
CPU_ONLY_HARMLESS = (r".*CUDA_DEVICE_MAX_CONNECTIONS",)


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def quiet_known_warnings() -> None:
    if verbose():
        return
    for message, category in KNOWN_HARMLESS:
        warnings.filterwarnings("ignore", message=message, category=category)
    for category in (DeprecationWarning, FutureWarning, PendingDeprecationWarning):
        warnings.filterwarnings("ignore", category=category, module=DEPRECATIONS_FROM)


def quiet_cpu_warnings() -> None:
    """For runs that chose the CPU: GPU tuning advice from megatron-core does not apply."""
    if not verbose():
        for message in CPU_ONLY_HARMLESS:
            warnings.filterwarnings("ignore", message=message, category=UserWarning)


def si(value: float, digits: int = 3) -> str:
    """7490.72 -> '7.49k', 1.2e9 -> '1.2G', 0.5 -> '0.5' (three significant digits)."""
    if value is None or not math.isfinite(value):
        return str(value)
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.{digits}g}{suffix}"
    return f"{value:.{digits}g}"


def duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    m, s = divmod(int(round(seconds)), 60)
    return f"{m} min {s:02d} s" if m < 60 else f"{m // 60} h {m % 60:02d} min"


# metric name -> how it reads on the console (metrics.jsonl keeps the full values)
def metric(key: str, value) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{key} {value}"
    if isinstance(value, float) and not math.isfinite(value):
        return f"{key} {value}"
    if key == "tokens_per_sec":
        return f"{si(value)} tok/s"
    if key == "model_tflops_per_gpu":
        return f"{si(value * 1e12)}FLOP/s/GPU"
    if key == "mfu":
        return f"MFU {100 * value:.1f}%"
    if key.endswith("_s") or key == "step_time_s":
        return f"{key[:-2]} {duration(value)}"
    if key == "lr":
        return f"lr {value:.2e}"
    if key == "max_memory_gib":
        return f"mem {value:.1f} GiB"
    if key.endswith("loss"):
        return f"{key} {value:.4f}"
    if key.endswith("accuracy"):
        return f"{key} {value:.3f}"
    if isinstance(value, int):
        return f"{key} {value}"
    return f"{key} {value:.4g}"


def error(message: object) -> None:
    """Print a user error as one `error:` line of its own: open progress bars are closed first, so
    the message never lands on a bar's line."""
    import sys

    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", ()) or ()):
        bar.close()
    print(f"error: {message}", file=sys.stderr, flush=True)
