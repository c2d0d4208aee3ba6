"""One training process group per run directory at a time.

Global rank 0 holds an exclusive `flock` on `<run>/.lock` for the whole run. A second launch
into the same directory (for instance after killing only the launcher: torchrun's ranks live in
their own sessions and keep training) is refused with the holder's host, pid and start time.
The kernel drops the lock when its holder dies however it dies, so a crash leaves nothing to
clean up: the next launch takes the lock and overwrites the stale holder record.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Optional

from megatron_slm.config import ConfigError

LOCK_FILE = ".lock"


class RunLock:
    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: Optional[int] = None

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise ConfigError(f"{self.path.parent} is in use by another training run ({holder}); stop it first "
                              f"(kill its training processes, not only the launcher) or choose another "
                              f"checkpoint.save") from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                                 "started": time.strftime("%Y-%m-%dT%H:%M:%S")}).encode())
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _read_holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        info = json.loads(os.read(fd, 4096).decode() or "{}")
        return f"host {info.get('host', '?')}, pid {info.get('pid', '?')}, started {info.get('started', '?')}"
    except (OSError, ValueError):
        return "holder unknown"
