"""SIGTERM / SIGUSR1 (SLURM preemption): remember the signal, act at the next step boundary.

Installed first thing in `pretrain_slm.py`, before the heavy imports, so a signal that arrives
while the job is still starting up is not fatal: the trainer sees the flag at its first step,
checkpoints and exits 0, and the SLURM script requeues.
"""
from __future__ import annotations

import signal

SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
_raised = False


def _handler(signum, frame) -> None:
    global _raised
    _raised = True


def install() -> None:
    for sig in SIGNALS:
        signal.signal(sig, _handler)


def uninstall() -> None:
    """Back to the default behaviour (train.exit_on_signal=false)."""
    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_DFL)


def raised() -> bool:
    return _raised
