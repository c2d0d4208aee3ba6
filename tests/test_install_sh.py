"""scripts/install.sh refuses an unusable WHEELHOUSE with one line naming it, before it creates
any environment (a venv made for the wheelhouse sees the system's packages, and a later online
install would reuse it). Runs a copy of the script in an empty checkout: nothing is installed."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from conftest import REPO


@pytest.mark.parametrize("wheelhouse, message", [
    ("/nonexistent/wheels", "WHEELHOUSE=/nonexistent/wheels is not a folder"),
    ("empty", "has no manifest.json"),
])
def test_an_unusable_wheelhouse_is_refused_before_any_environment_exists(tmp_path, wheelhouse, message):
    checkout = tmp_path / "checkout"
    (checkout / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "install.sh", checkout / "scripts" / "install.sh")
    (tmp_path / "empty").mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "CONDA_PREFIX")}
    env["WHEELHOUSE"] = wheelhouse
    proc = subprocess.run(["bash", str(checkout / "scripts" / "install.sh")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (checkout / ".venv").exists()
