"""The pytest plugin (`-p gpucheck.plugin`, with scripts/ on PYTHONPATH): every test's outcome is
appended to the JSONL file named by $GPU_CHECK_PYTEST_LOG as it happens, so a run cut by its time
limit still reports what ran; and the reader of that file."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

PYTEST_LOG_ENV = "GPU_CHECK_PYTEST_LOG"


_ROOTDIR: Optional[Path] = None


def pytest_configure(config):
    global _ROOTDIR
    _ROOTDIR = Path(str(config.rootpath))


def pytest_runtest_logreport(report):
    path = os.environ.get(PYTEST_LOG_ENV)
    if not path:
        return
    if not (report.when == "call" or report.outcome != "passed"):
        return
    reason = None
    if report.skipped and isinstance(report.longrepr, tuple):
        reason = str(report.longrepr[2]).removeprefix("Skipped: ")
    elif report.failed:
        text = getattr(report, "longreprtext", "") or ""
        errors = [l[1:].strip() for l in text.splitlines() if l.startswith("E ")]
        reason = (errors[0] if errors else (text.splitlines() or [""])[-1])[:300]
    file, _, rest = report.nodeid.partition("::")
    rerun = str(_ROOTDIR / file) + (f"::{rest}" if rest else "") if _ROOTDIR else report.nodeid
    with open(path, "a") as fh:
        fh.write(json.dumps({"nodeid": report.nodeid, "rerun": rerun, "when": report.when,
                             "outcome": report.outcome, "seconds": round(report.duration, 2),
                             "reason": reason}) + "\n")


def read_test_log(path: Path) -> dict[str, dict]:
    """nodeid -> {outcome, reason, seconds}: failed beats skipped beats passed."""
    rank = {"passed": 0, "skipped": 1, "failed": 2}
    tests: dict[str, dict] = {}
    if not path.is_file():
        return tests
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        old = tests.get(rec["nodeid"])
        if old is None or rank[rec["outcome"]] > rank[old["outcome"]]:
            tests[rec["nodeid"]] = rec
    return tests


def count_outcomes(tests: dict[str, dict]) -> dict:
    n = {k: sum(1 for t in tests.values() if t["outcome"] == k) for k in ("passed", "failed", "skipped")}
    return n
