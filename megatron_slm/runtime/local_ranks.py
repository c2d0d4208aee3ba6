"""Run one command as N local ranks, the way torchrun would, without its failure report.

    rc = run_local_ranks([sys.executable, script, *argv], nproc=4)

A tool that needs TP*PP processes (conversion verify) starts itself once per rank with
RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT set. A rank that fails has already printed its
one-line error; torchrun would add a ChildFailedError traceback and an elastic report around it,
which is noise to a user who gave a wrong path. Every rank checks the same inputs, so a line
that several ranks print on stderr is shown once. The first rank to fail decides the exit code;
the others are stopped (they would wait forever in a collective with a dead peer).
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

GRACE_SECONDS = 5.0  # the others' time to finish on their own after the first failure


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _OnceEach:
    """Forwards the ranks' stderr lines as they come, each distinct line once."""

    def __init__(self) -> None:
        self.seen: set[bytes] = set()
        self.lock = threading.Lock()

    def pump(self, stream) -> None:
        for line in iter(stream.readline, b""):
            with self.lock:
                if line not in self.seen:
                    self.seen.add(line)
                    sys.stderr.buffer.write(line)
                    sys.stderr.flush()
        stream.close()


def run_local_ranks(cmd: list[str], nproc: int, poll_seconds: float = 0.1) -> int:
    port = str(free_port())
    procs, pumps, once = [], [], _OnceEach()
    for rank in range(nproc):
        env = {"OMP_NUM_THREADS": "1", **os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank),
               "WORLD_SIZE": str(nproc), "LOCAL_WORLD_SIZE": str(nproc), "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": port}
        procs.append(subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE))
        pumps.append(threading.Thread(target=once.pump, args=(procs[-1].stderr,), daemon=True))
        pumps[-1].start()
    failed_at, rc = None, 0
    try:
        while any(p.poll() is None for p in procs):
            if failed_at is None:
                bad = [p.returncode for p in procs if p.returncode not in (None, 0)]
                if bad:
                    failed_at, rc = time.monotonic(), bad[0]
            elif time.monotonic() - failed_at > GRACE_SECONDS:
                break
            time.sleep(poll_seconds)
    finally:  # Ctrl-C or a failed peer: no rank outlives the launcher
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for t in pumps:
            t.join(timeout=5)
    if rc == 0:
        rc = next((p.returncode for p in procs if p.returncode != 0), 0)
    return rc if rc >= 0 else 128 - rc  # a rank killed by signal N: 128 + N, as a shell reports it
