"""The environment steps run in: a throwaway venv over this interpreter's packages (minus those the
wheelhouse must provide), offline pip settings, and a probe of what an interpreter can do."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional


def _site_dirs() -> list[Path]:
    """The folders this interpreter imports installed packages from."""
    dirs = []
    for p in sys.path:
        if p and Path(p).name in ("site-packages", "dist-packages") and Path(p).is_dir():
            dirs.append(Path(p).resolve())
    return list(dict.fromkeys(dirs))


def _owned_entries(site_dir: Path, names: set[str]) -> set[str]:
    """Top-level entries of `site_dir` that belong to the distributions `names` (canonical)."""
    from importlib import metadata

    owned: set[str] = set()
    for dist in metadata.distributions(path=[str(site_dir)]):
        name = (dist.metadata["Name"] or "").lower().replace("_", "-").replace(".", "-")
        if name not in names:
            continue
        info = getattr(dist, "_path", None)
        if info is not None:
            owned.add(Path(info).name)
        for f in dist.files or []:
            top = Path(str(f)).parts[0] if Path(str(f)).parts else ""
            if top and top != "..":
                owned.add(top)
        owned.update((dist.read_text("top_level.txt") or "").split())
    return owned


def make_env(dest: Path, hide: set[str], log) -> tuple[Path, list[str]]:
    """A venv at `dest` that sees this interpreter's installed packages, except the distributions
    `hide` (those must come from the wheelhouse). Returns (its python, the pip command prefix).

    A venv's --system-site-packages would expose only the *base* interpreter's packages, not those
    of the venv or conda env this runs in, and could not leave any out; so the venv instead reads a
    folder of links to this interpreter's site-packages entries, minus the hidden ones."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    views = []
    for i, site_dir in enumerate(_site_dirs()):
        view = dest / "base" / str(i)
        view.mkdir(parents=True)
        skip = _owned_entries(site_dir, hide)
        for entry in site_dir.iterdir():
            if entry.name not in skip and entry.name != "__pycache__":
                (view / entry.name).symlink_to(entry)
        views.append(view)
        log(f"base packages: {site_dir} (hidden: {', '.join(sorted(skip)) or 'none'})")
    # Without a pip of its own: a venv's bundled pip/setuptools would shadow (older) base ones that
    # installed packages require (torch wants setuptools >= 77); the base's pip drives the venv.
    venv = dest / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    lines = [f"import site; site.addsitedir({str(v)!r})" for v in views]
    (Path(site) / "_gpu_check_base.pth").write_text("\n".join(lines) + "\n")
    pip_prefix = [str(python), "-m", "pip"]
    if subprocess.run([*pip_prefix, "--version"], capture_output=True).returncode != 0:
        log("no pip among the base packages: bootstrapping one with ensurepip")
        subprocess.run([str(python), "-m", "ensurepip", "--default-pip"], check=True, capture_output=True)
    (dest / "pip.json").write_text(json.dumps(pip_prefix))
    return python, pip_prefix


def offline_env(extra: Optional[dict] = None) -> dict:
    """Subprocess environment for pip without any configured index or find-links."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1",
               PYTHONWARNINGS="ignore")
    env.update(extra or {})
    return env


_PROBE = r"""
import importlib.util as u, json, platform, sys
out = {"python": platform.python_version(), "executable": sys.executable,
       "te": u.find_spec("transformer_engine") is not None,
       "dali": u.find_spec("nvidia") is not None and u.find_spec("nvidia.dali") is not None,
       "soundfile": u.find_spec("soundfile") is not None, "pytest": u.find_spec("pytest") is not None}
try:
    import torch
    out.update(torch=torch.__version__, cuda_version=torch.version.cuda, cuda=torch.cuda.is_available())
    if out["cuda"]:
        out.update(device_count=torch.cuda.device_count(), device=torch.cuda.get_device_name(0),
                   capability=".".join(map(str, torch.cuda.get_device_capability(0))),
                   bf16=torch.cuda.is_bf16_supported())
except Exception as e:
    out.update(cuda=False, error=f"{type(e).__name__}: {e}")
try:
    import megatron.core
    out["megatron_core"] = megatron.core.__version__
except Exception as e:
    out["megatron_core"] = None
print("GPU_CHECK_PROBE " + json.dumps(out))
"""


def probe_environment(python: Path, extra_env: Optional[dict] = None, timeout: float = 180) -> dict:
    try:
        proc = subprocess.run([str(python), "-c", _PROBE], capture_output=True, text=True, timeout=timeout,
                              env=offline_env(extra_env), cwd=tempfile.gettempdir())
    except subprocess.TimeoutExpired:
        return {"cuda": False, "error": f"the probe of {python} took over {timeout:.0f} s"}
    for line in proc.stdout.splitlines():
        if line.startswith("GPU_CHECK_PROBE "):
            return json.loads(line.split(" ", 1)[1])
    return {"cuda": False, "error": f"the probe of {python} failed: {proc.stderr.strip()[-300:]}"}


def describe_probe(p: dict) -> str:
    cuda = (f"{p.get('device')} x{p.get('device_count')} (sm {p.get('capability')})" if p.get("cuda")
            else "no CUDA" + (f": {p['error']}" if p.get("error") else ""))
    return (f"Python {p.get('python')}, torch {p.get('torch')} (CUDA {p.get('cuda_version')}), {cuda}; "
            f"megatron-core {p.get('megatron_core')}; Transformer Engine {'yes' if p.get('te') else 'no'}, "
            f"DALI {'yes' if p.get('dali') else 'no'}, soundfile {'yes' if p.get('soundfile') else 'no'}")
