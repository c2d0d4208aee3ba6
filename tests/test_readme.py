"""The README front door stays true: every file, tool, sub-command and config it names exists."""
from __future__ import annotations

import re

from conftest import REPO


def readme() -> str:
    return (REPO / "README.md").read_text()


def test_named_paths_exist():
    text = readme()
    paths = set(re.findall(r"\b((?:tools|examples|docs|bench|megatron_slm|scripts)/[\w./<>-]+)", text))
    paths |= {"run_demo.sh", "run_tests.sh", "pretrain_slm.py"}
    missing = []
    for p in sorted(paths):
        p = p.rstrip(".,)")
        if "<" in p or "*" in p:
            continue
        if not (REPO / p).exists():
            missing.append(p)
    assert not missing, f"README names files that do not exist: {missing}"


def test_tool_subcommands_exist():
    """`python tools/x.py sub` in the README: the tool defines that sub-command."""
    for tool, sub in re.findall(r"tools/(\w+)\.py ([a-z][\w-]+)", readme()):
        source = (REPO / "tools" / f"{tool}.py").read_text()
        if "add_subparsers" in source or "add_parser" in source:
            assert f'"{sub}"' in source or f"'{sub}'" in source or sub in source, f"tools/{tool}.py has no {sub!r}"


def test_overrides_in_readme_are_config_keys():
    from megatron_slm.config import iter_fields

    keys = {k for k, *_ in iter_fields()}
    for key in re.findall(r"\b((?:model|parallel|precision|optimizer|train|data|checkpoint|logging|eval|runtime)"
                          r"\.[a-z_]+)=", readme()):
        assert key in keys, f"README uses unknown config key {key}"


def test_the_two_setup_commands_are_there():
    text = readme()
    assert "bash run_demo.sh" in text and "bash run_tests.sh" in text
    assert "run_tests.sh" in (REPO / ".ci" / "run").read_text()
