"""scripts/make_wheelhouse.sh against the real package index, and installs from a wheelhouse with no
index: the Python 3.12 wheelhouse of the GPU node (within its 60 MiB budget, no torch/CUDA wheels,
nothing the node has), the budget refusal, and for this Python an install through
scripts/gpu_check.py's install step and through scripts/install.sh, then imports and a console
script from outside the checkout. Skipped when the package index is unreachable."""
from __future__ import annotations

import fnmatch
import glob
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow
MAKE_WHEELHOUSE = REPO / "scripts" / "make_wheelhouse.sh"
GPU_CHECK = REPO / "scripts" / "gpu_check.py"
THIS_PYTHON = f"{sys.version_info[0]}.{sys.version_info[1]}"


def run(cmd, cwd=REPO, env=None, timeout=600):
    full = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHON": sys.executable, **(env or {})}
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=full, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    """Skip unless pip can download from its configured index (a small, pinned wheel)."""
    dest = tmp_path_factory.mktemp("probe")
    try:
        proc = run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", dest,
                    "--python-version", "3.12", "--platform", "any", "pytest-timeout==2.4.0"], timeout=120)
    except subprocess.TimeoutExpired:
        pytest.skip("the package index did not answer within 120 s")
    if proc.returncode != 0:
        pytest.skip(f"the package index is unreachable: {proc.stderr.strip()[-200:]}")


def version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split("."))


def wheel_tags(name: str) -> tuple[set, set, set]:
    py, abi, plat = name[:-4].split("-")[-3:]
    return set(py.split(".")), set(abi.split(".")), set(plat.split("."))


@pytest.fixture(scope="module")
def wh312(index, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wh312") / "wh"
    proc = run(["bash", MAKE_WHEELHOUSE, "--python", "3.12", "--out", out, "--platform", "manylinux_2_28_x86_64"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def test_python312_wheelhouse_fits_the_budget_and_holds_only_what_the_node_lacks(wh312):
    import hashlib

    m = json.loads((wh312 / "manifest.json").read_text())
    files = sorted(p.name for p in wh312.glob("*.whl"))
    assert sorted(w["file"] for w in m["wheels"]) == files
    total = sum((wh312 / f).stat().st_size for f in files)
    assert total == m["total_bytes"] <= 60 * 2**20
    for w in m["wheels"]:
        assert hashlib.sha256((wh312 / w["file"]).read_bytes()).hexdigest() == w["sha256"]
        py, abi, plat = wheel_tags(w["file"])
        stable = {t for t in py if "abi3" in abi and re.fullmatch(r"cp3\d+", t) and int(t[3:]) <= 12}
        assert (py & {"cp312", "py3", "py2"} or stable) and abi & {"cp312", "abi3", "none"}, w["file"]
        assert all(p == "any" or re.fullmatch(r"manylinux(_2_\d+|1|2010|2014)_x86_64", p) for p in plat), w["file"]
    names = {w["name"] for w in m["wheels"]}
    # never torch or CUDA, never what the node has
    assert not any(fnmatch.fnmatch(n, p) for n in names for p in ("torch*", "nvidia-*", "triton", "*cuda*", "*-cu1?"))
    assert not names & {"numpy", "scipy", "scikit-learn", "transformers", "pyyaml", "sentencepiece", "safetensors",
                        "tokenizers", "tqdm"}
    assert {"megatron-slm", "megatron-core", "orjson", "psutil", "pytest", "soundfile"} <= names
    mc = m["megatron_core"]
    assert "0.16.1" in mc["versions"] and len(mc["versions"]) >= 2
    assert mc["newest"] == max(mc["versions"], key=version) and version(mc["newest"]) >= (0, 17)
    assert m["project"]["file"] in files and m["python"] == "3.12"


def test_dry_run_of_the_node_wheelhouse(wh312, tmp_path):
    proc = run([sys.executable, GPU_CHECK, "--wheelhouse", wh312, "--out", tmp_path, "--dry-run",
                "--steps", "install,cpu-suite"])
    assert proc.returncode == 0, proc.stderr
    plan = json.loads((tmp_path / "gpu_check_plan.json").read_text())
    mc = plan["wheelhouse"]["megatron_core"]
    assert mc["baseline"] == "0.16.1" and version(mc["newest"]) > (0, 16, 1) and "megatron-core in it: " in proc.stdout
    steps = {s["name"]: s for s in plan["steps"]}
    assert "megatron-core==0.16.1" in steps["install"]["command"]
    assert mc["newest"] in steps["cpu-suite"]["command"]
    unfit = plan["wheelhouse"]["fit_here"]["unfit"]
    if THIS_PYTHON == "3.12":
        assert steps["install"]["status"] == steps["cpu-suite"]["status"] == "run"
    else:  # cp312 wheels: said here, before the trip to the node
        assert any("cp312" in f for f in unfit) and steps["install"]["status"] == "fail"
        assert "3.12" in steps["install"]["reason"] and steps["cpu-suite"]["status"] == "skip"


def _python312() -> str | None:
    for candidate in [shutil.which("python3.12"), *sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.12*/bin/python3.12")))]:
        if candidate and subprocess.run([candidate, "--version"], capture_output=True).returncode == 0:
            return candidate
    return None


def test_python312_wheelhouse_installs_offline_and_leaves_only_the_node_packages_missing(wh312, tmp_path):
    """Where a Python 3.12 exists here: every wheel installs with no index, and `pip check` then
    misses only packages the node has (the wheelhouse's `have` list)."""
    py312 = _python312()
    if py312 is None:
        pytest.skip("no Python 3.12 interpreter on this machine")
    m = json.loads((wh312 / "manifest.json").read_text())
    venv = tmp_path / "v312"
    subprocess.run([py312, "-m", "venv", venv], check=True)
    gc = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    gc.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1")
    one_mcore = [w["file"] for w in m["wheels"] if w["name"] != "megatron-core" or w["version"] == "0.16.1"]
    proc = subprocess.run([venv / "bin" / "python", "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                           *[wh312 / f for f in one_mcore]], capture_output=True, text=True, env=gc)
    assert proc.returncode == 0, proc.stderr
    check = subprocess.run([venv / "bin" / "python", "-m", "pip", "check"], capture_output=True, text=True, env=gc)
    missing = set(re.findall(r"requires ([\w.-]+), which is not installed", check.stdout))
    have = m["have"]
    assert missing and all(n in have or any(fnmatch.fnmatch(n, p) for p in have) for n in missing), missing
    assert "has requirement" not in check.stdout  # no version conflicts among the wheelhouse's own wheels


def test_over_budget_is_refused_and_nothing_written(index, tmp_path):
    out = tmp_path / "wh"
    proc = run(["bash", MAKE_WHEELHOUSE, "--python", "3.12", "--out", out, "--budget-mib", "5"])
    assert proc.returncode == 2 and "over the 5 MiB budget" in proc.stderr and "Traceback" not in proc.stderr
    assert not list(out.glob("*.whl")) and not (out / "manifest.json").exists()


@pytest.fixture(scope="module")
def installed(index, tmp_path_factory):
    """A wheelhouse for this Python holding megatron-slm, megatron-core, orjson and psutil (taken
    as absent although installed here), installed by gpu_check's install step: a venv that sees
    this environment's packages except those four."""
    root = tmp_path_factory.mktemp("offline")
    wh = root / "wh"
    proc = run(["bash", MAKE_WHEELHOUSE, "--python", THIS_PYTHON, "--out", wh, "--have-installed",
                "--need", "megatron-core,orjson,psutil", "--mcore-versions", "0.16.1", "--no-build-isolation"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = root / "check"
    proc = run([sys.executable, GPU_CHECK, "--wheelhouse", wh, "--out", out, "--steps", "install"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return wh, out


def test_install_from_the_wheelhouse_with_no_index(installed, tmp_path):
    wh, out = installed
    summary = json.loads((out / "gpu_check.json").read_text())
    (install,) = summary["steps"]
    assert install["status"] == "ok" and install["figures"]["megatron-core"] == "0.16.1"
    log = (out / install["log"]).read_text()
    for name in ("megatron_slm", "megatron_core", "orjson", "psutil"):  # from the wheelhouse, not this env
        assert re.search(rf"Processing {re.escape(str(wh))}/{name}-", log), name
    python = out / "env" / "venv" / "bin" / "python"
    probe = subprocess.run([python, "-c", "import megatron_slm, megatron.core, orjson, psutil; "
                            "print(megatron_slm.__file__); print(megatron.core.__file__)"],
                           cwd=tmp_path, capture_output=True, text=True)
    assert probe.returncode == 0, probe.stderr
    assert all(Path(p).is_relative_to(out / "env" / "venv") for p in probe.stdout.split())
    # a console script of the installed wheel, run for real from outside the checkout
    est = subprocess.run([python.parent / "slm-estimate-memory", "--config",
                          REPO / "examples" / "configs" / "sims_llama3.2-1b_a100.yaml", "--preset", "llama3.2-1b"],
                         cwd=tmp_path, capture_output=True, text=True)
    assert est.returncode == 0 and "GiB" in est.stdout, est.stdout + est.stderr


def test_install_sh_offline_into_an_environment_with_torch(installed, tmp_path):
    """WHEELHOUSE=DIR scripts/install.sh, in a copy of the checkout, into the venv above: an
    editable install with no index (setuptools from the environment, the test extra)."""
    wh, out = installed
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True,
                           check=True).stdout.decode().split("\0")
    copy = tmp_path / "checkout"
    for rel in filter(None, files):
        if (REPO / rel).is_file():
            (copy / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, copy / rel)
    venv = out / "env" / "venv"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") and k != "CONDA_PREFIX"}
    env.update(VIRTUAL_ENV=str(venv), PATH=f"{venv / 'bin'}:{env['PATH']}", PYTHON=str(venv / "bin" / "python"),
               WHEELHOUSE=str(wh), PIP_CONFIG_FILE=os.devnull)
    proc = subprocess.run(["bash", copy / "scripts" / "install.sh"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "offline: installing from the wheelhouse" in proc.stdout and "extras [test]" in proc.stdout
    where = subprocess.run([venv / "bin" / "python", "-c", "import megatron_slm; print(megatron_slm.__file__)"],
                           cwd=tmp_path, capture_output=True, text=True)
    assert Path(where.stdout.strip()).is_relative_to(copy), where.stdout + where.stderr
