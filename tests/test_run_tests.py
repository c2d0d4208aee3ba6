"""run_tests.sh: test paths run just those paths, any other argument goes to pytest, none runs the suite."""
from __future__ import annotations

import re
import subprocess

import pytest

from conftest import REPO


def collected(args: list[str], cwd=REPO) -> set[str]:
    """The test files `bash run_tests.sh ARGS --collect-only` would run."""
    proc = subprocess.run(["bash", str(REPO / "run_tests.sh"), *args, "--collect-only", "-q"], cwd=cwd,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    # `-q` once lists test ids (file::name), more often `file: count`
    files = {re.split(r"::|: \d", line)[0] for line in proc.stdout.splitlines() if re.search(r"::|: \d+$", line)}
    return {f.rsplit("/", 1)[-1] for f in files}


@pytest.mark.slow  # > 10 s: the full suite runs it, the inner loop does not
def test_a_path_runs_only_that_path(tmp_path):
    assert collected(["tests/test_vocab.py", "-q"]) == {"test_vocab.py"}
    # typed from another folder: relative to where it was typed; a test id keeps its ::name
    (tmp_path / "tests").symlink_to(REPO / "tests")
    assert collected(["tests/test_vocab.py::test_word_tokens_are_cached_and_separability_is_checked",
                      "tests/test_wheelhouse.py"], cwd=tmp_path) == {"test_vocab.py", "test_wheelhouse.py"}


def test_without_a_path_the_whole_suite_runs():
    """`.ci/run` passes `-ra`: pytest arguments alone still mean every test file (the glob keeps the
    collection small: every file from test_v on)."""
    assert collected(["-ra", "--ignore-glob=*/test_[a-u]*.py"]) == {
        p.name for p in (REPO / "tests").glob("test_[v-z]*.py")}
