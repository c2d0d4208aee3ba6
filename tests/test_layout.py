"""The package layout: who may import whom, thin entry points, installable commands."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, TINY_CPU

PKG = REPO / "megatron_slm"

# (importer: package or module, forbidden import prefix, why)
RULES = [
    ("megatron_slm.convert", "megatron_slm.training", "conversion loads checkpoints through checkpoint/"),
    ("megatron_slm.eval", "megatron_slm.training", "evaluation loads checkpoints through checkpoint/"),
    ("megatron_slm.generate", "megatron_slm.training", "generation loads checkpoints through checkpoint/"),
    ("megatron_slm.checkpoint", "megatron_slm.training", "the run-directory format does not depend on the loop"),
    ("megatron_slm.data.datasets", "megatron_slm.data.preprocess", "training reads data/storage.py, not the offline driver"),
    ("megatron_slm.data.blend", "megatron_slm.data.preprocess", "training reads data/storage.py, not the offline driver"),
    ("megatron_slm.data.storage", "megatron_slm.data.preprocess", "the format does not depend on its writer"),
    ("megatron_slm.models", "megatron_slm.scaling", "models know nothing of sweeps"),
    ("megatron_slm.generate", "megatron_slm.eval", "generative metrics live in eval/, which runs generation"),
    ("megatron_slm.models", "megatron_slm.checkpoint", "checkpoint/ builds on models/, not the reverse"),
]


def module_name(path: Path, root: Path = REPO) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-level imports included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def test_import_rules_hold():
    files = {module_name(p): p for p in PKG.rglob("*.py")}
    assert len(files) > 50  # the walk found the package
    broken = []
    for importer, forbidden, why in RULES:
        for name, path in files.items():
            if name == importer or name.startswith(importer + "."):
                bad = sorted(i for i in imports_of(path) if i == forbidden or i.startswith(forbidden + "."))
                broken += [f"{name} imports {b}: {why}" for b in bad]
    assert not broken, "\n".join(broken)


def test_the_rules_catch_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from megatron_slm.training.trainer import Trainer\n")
    assert "megatron_slm.training.trainer" in imports_of(bad)


# The layers of the package, lowest first: a package or top-level module may import its own layer
# and the ones below, never one above. Every top-level name under megatron_slm/ must be placed here.
LAYERS = [
    ("conventions", "vocab", "fields", "jsonio", "console", "batching", "outputs", "config"),
    ("audio",),  # sources, probing, decoders, the screen of decoded audio
    ("corpus", "align"),  # word alignments of every format, the story corpus, speech synthesis, the aligner
    ("units", "unit_identity", "document"),  # features, k-means, extraction; unit identity; the document layout
    ("data",),  # interleaving, preprocessing, datasets
    ("runtime", "models"),  # the model builder and the slm_model.json record
    ("checkpoint",),  # the run directory, loading for inference
    ("convert", "eval", "generate", "scaling"),
    ("training", "posttrain"),
    ("cli", "train", "testing", "commands"),  # entry points and test helpers
]

# Known violations that are being removed: each entry names who removes it; the list only shrinks.
KNOWN_UPWARD: set[str] = set()
KNOWN_CYCLES: set[tuple[str, ...]] = set()


def import_graph(root: Path = REPO) -> dict[str, set[str]]:
    """module -> the package modules it imports (module- and function-level), each name resolved to
    the longest module that exists (`from a.b import f` is an import of a.b)."""
    files = {module_name(p, root): p for p in (root / "megatron_slm").rglob("*.py")}

    def resolve(name: str) -> str | None:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, path in files.items():
        targets = {resolve(i) for i in imports_of(path) if i.startswith("megatron_slm.")}
        graph[name] = {t for t in targets if t and t not in (name, "megatron_slm")}
    return graph


def top_level(module: str) -> str:
    return module.split(".")[1]


def upward_imports(graph: dict[str, set[str]]) -> set[str]:
    layer = {name: i for i, names in enumerate(LAYERS) for name in names}
    unplaced = {top_level(m) for m in graph if m != "megatron_slm"} - set(layer)
    assert not unplaced, f"add {sorted(unplaced)} to LAYERS in tests/test_layout.py"
    return {f"{m} imports {t}" for m, targets in graph.items() if m != "megatron_slm"
            for t in targets if layer[top_level(t)] > layer[top_level(m)]}


def import_cycles(graph: dict[str, set[str]]) -> set[tuple[str, ...]]:
    """The modules of each import cycle (strongly connected components of more than one module)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = set()

    def visit(v: str) -> None:  # Tarjan's algorithm; the graph is a few hundred modules deep at most
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
            if len(component) > 1:
                cycles.add(tuple(sorted(component)))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_no_package_imports_a_layer_above_it():
    found = upward_imports(import_graph())
    assert not found - KNOWN_UPWARD, "\n".join(sorted(found - KNOWN_UPWARD))
    assert not KNOWN_UPWARD - found, f"fixed, remove from KNOWN_UPWARD: {sorted(KNOWN_UPWARD - found)}"


def test_no_import_cycles_between_modules():
    found = import_cycles(import_graph())
    assert not found - KNOWN_CYCLES, "\n".join(" <-> ".join(c) for c in sorted(found - KNOWN_CYCLES))
    assert not KNOWN_CYCLES - found, f"fixed, remove from KNOWN_CYCLES: {sorted(KNOWN_CYCLES - found)}"


def test_the_layer_and_cycle_checks_catch_a_violation(tmp_path):
    """A tree with one upward import and one cycle closed by a function-level import."""
    files = {
        "__init__.py": "",
        "vocab.py": "",
        "data/__init__.py": "",
        "data/a.py": "from megatron_slm import vocab\nfrom megatron_slm.data.b import g\n",
        "data/b.py": "def g():\n    from megatron_slm.data.a import f\n",
        "data/c.py": "from megatron_slm.training.trainer import Trainer\n",
        "training/__init__.py": "",
        "training/trainer.py": "from megatron_slm.data.c import x\n",
    }
    for rel, text in files.items():
        path = tmp_path / "megatron_slm" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    graph = import_graph(tmp_path)
    assert upward_imports(graph) == {"megatron_slm.data.c imports megatron_slm.training.trainer"}
    assert import_cycles(graph) == {("megatron_slm.data.a", "megatron_slm.data.b"),
                                    ("megatron_slm.data.c", "megatron_slm.training.trainer")}


def test_entry_points_are_thin():
    """tools/*.py and pretrain_slm.py only hand over to the package: no sys.path edits, few lines."""
    for path in [*sorted((REPO / "tools").glob("*.py")), REPO / "pretrain_slm.py"]:
        text = path.read_text(encoding="utf-8")
        assert "sys.path" not in text, path
        code = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
        assert len(code) <= 12, (path, len(code))
        assert "from megatron_slm." in text, path
    assert "REPO" not in (PKG / "commands" / "launch.py").read_text()  # the launcher needs no checkout


def test_every_help_is_fast():
    """--help answers before torch, transformers or Megatron-Core are imported."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    slow = []
    for path in sorted((REPO / "tools").glob("*.py")) + [REPO / "pretrain_slm.py"]:
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-X", "importtime", str(path), "--help"], env=env,
                              capture_output=True, text=True, timeout=60)
        seconds = time.perf_counter() - t0
        assert proc.returncode == 0, (path, proc.stderr[-2000:])
        heavy = [m for m in ("torch", "transformers", "megatron.core", "scipy")
                 if f"| {m}\n" in proc.stderr or proc.stderr.rstrip().endswith(f"| {m}")]
        if heavy or seconds > 1.0:
            slow.append(f"{path.name}: {seconds:.2f}s, imports {heavy}")
    assert not slow, "\n".join(slow)


@pytest.mark.slow
def test_pip_install_gives_commands_that_run_outside_the_checkout(tmp_path):
    """A non-editable `pip install .` into a fresh venv (reusing this venv's dependencies, so nothing
    big is downloaded): the console commands and `python -m megatron_slm.train` work from another dir."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import site; print(site.getsitepackages()[0])"], capture_output=True,
                          text=True, check=True).stdout.strip()
    # torch & co. from this venv, appended after the new venv's own packages; this venv's editable
    # megatron_slm is not visible (its .pth is not processed from a plain path entry)
    import site as this_site

    Path(site, "_deps.pth").write_text("\n".join(this_site.getsitepackages()) + "\n")
    build = tmp_path / "src"
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(REPO), str(build)], check=True)
    for rel in ("megatron_slm", "setup.py", "pyproject.toml", "examples/configs/tiny_cpu.yaml"):  # the working tree, committed or not
        src, dst = REPO / rel, build / rel
        if src.is_dir():
            subprocess.run(["rm", "-rf", str(dst)], check=True)
            subprocess.run(["cp", "-r", str(src), str(dst)], check=True)
        else:
            dst.write_bytes(src.read_bytes())
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PYTHONWARNINGS"] = "ignore"
    pip = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(build)],
                         env=env, capture_output=True, text=True, timeout=600)
    assert pip.returncode == 0, pip.stderr[-3000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run([str(py), "-c", "import megatron_slm; print(megatron_slm.__file__)"], cwd=elsewhere,
                           env=env, capture_output=True, text=True, check=True).stdout
    assert where.startswith(site), where  # the installed copy, not the checkout
    for command in ("slm-train", "slm-eval", "slm-extract-units", "slm-preprocess-data", "slm-convert-checkpoint"):
        proc = subprocess.run([str(venv / "bin" / command), "--help"], cwd=elsewhere, env=env,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0 and "usage" in proc.stdout, (command, proc.stderr[-2000:])
    config = elsewhere / "tiny.yaml"
    config.write_text(TINY_CPU.read_text())
    proc = subprocess.run([str(py), "-m", "megatron_slm.train", "--config", str(config), "train.iters=2",
                           f"checkpoint.save={elsewhere / 'run'}"], cwd=elsewhere, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert (elsewhere / "run" / "latest_checkpointed_iteration.txt").read_text().strip() == "2"
    assert "Warning" not in proc.stdout + proc.stderr, proc.stderr[-2000:]  # the console stays readable
