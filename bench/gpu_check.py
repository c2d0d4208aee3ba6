#!/usr/bin/env python
"""One offline command that checks the GPU paths and measures the GPU figures on a node.

    python bench/gpu_check.py --wheelhouse wh/ --out gpu_check/ --dry-run   # the plan; runs nothing heavy
    python bench/gpu_check.py --wheelhouse wh/ --out gpu_check/             # all steps, within --budget-s
    python bench/gpu_check.py --wheelhouse wh/ --out gpu_check/ --steps install,train

The wheelhouse comes from `bash scripts/make_wheelhouse.sh --python 3.12 --out wh/` on a
connected machine (docs/gpu.md). Every step runs in its own subprocess with its own time limit
(and all of them within --budget-s); a failing step is reported and the next still runs; nothing
uses the network.

  install    megatron-slm (test extra), the wheelhouse's extra packages and the baseline
             megatron-core, with `pip install --no-index`, into a throwaway venv on top of this
             Python's packages; then an import and a console script from outside the checkout
  gpu-tests  pytest -m gpu; the tests that cannot run here are listed with their skip reasons
  train      a Llama-3.2-1B-shaped model (SIMS vocabulary), bf16, local layer spec, NCCL, a few
             steps: tokens/s, TFLOP/s, MFU, peak memory (from the run's metrics.jsonl)
  train-fp8  the same on the Transformer Engine spec in FP8 -- only where transformer_engine imports
  units      an mhubert-base-sized random HuBERT on GPU batches (soundfile loader): audio s/s in
             bf16 and float32, and how many frames get the same unit in both
  generate   bench/generate.py, once it exists
  cpu-suite  pytest -m "not gpu and not slow" (GPU hidden) against the newest megatron-core of the
             wheelhouse; the tests that fail are rerun against the baseline to tell the two apart

Results: <out>/gpu_check.json and <out>/gpu_check.md (a section bench/RESULTS.md takes as is),
rewritten after every step; logs in <out>/logs/. Exit status 0 when no step failed or timed out.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import importlib.util
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
CORPUS_AUDIO = REPO / "examples" / "data" / "tiny_corpus" / "audio"
MANIFEST = "manifest.json"
PYTEST_LOG_ENV = "GPU_CHECK_PYTEST_LOG"
# What the documented node lacks (docs/gpu.md); a dry run on a machine without CUDA predicts for it.
NODE_ABSENT = ("transformer_engine", "nvidia.dali")
TE_ABSENT_REASON = ("Transformer Engine is not importable here (its CUDA 13 wheel is ~276 MB, over the "
                    "wheelhouse budget): the TE layer spec and FP8 are not checked")
# A test file mentioning one of these exercises megatron-core: the cpu-suite runs those first, so
# that a run cut by its time limit has covered what the megatron-core version can change.
MCORE_HINTS = ("megatron.core", "run_torchrun", "PRETRAIN", "megatron_slm.training", "megatron_slm.convert",
               "megatron_slm.checkpoint", "megatron_slm.models", "megatron_slm.runtime", "megatron_slm.eval")


class CheckError(RuntimeError):
    """A user-facing problem before any step runs (bad wheelhouse, bad option): one line, exit 2."""


# --------------------------------------------------------------------------- the wheelhouse


class Wheelhouse:
    """A folder made by scripts/make_wheelhouse.sh: wheels + manifest.json."""

    def __init__(self, path: Path):
        self.path = path.resolve()
        manifest = self.path / MANIFEST
        if not self.path.is_dir():
            raise CheckError(f"--wheelhouse {path}: no such folder (make one with scripts/make_wheelhouse.sh)")
        if not manifest.is_file():
            raise CheckError(f"--wheelhouse {path}: no {MANIFEST}: not a complete wheelhouse from "
                             "scripts/make_wheelhouse.sh")
        try:
            self.manifest = json.loads(manifest.read_text())
            self.wheels = self.manifest["wheels"]
            self.project = self.manifest["project"]
            self.mcore = self.manifest["megatron_core"]
        except (ValueError, KeyError) as e:
            raise CheckError(f"{manifest}: not a wheelhouse manifest ({e})") from None

    def verify(self) -> None:
        """Every listed wheel is there with its recorded sha256 (a copy to the node can truncate)."""
        for entry in self.wheels:
            f = self.path / entry["file"]
            if not f.is_file():
                raise CheckError(f"{self.path / MANIFEST}: wheel {entry['file']} is missing from the wheelhouse")
            h = hashlib.sha256()
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
            if h.hexdigest() != entry["sha256"]:
                raise CheckError(f"{f}: sha256 differs from {MANIFEST} (a damaged copy?); copy the wheelhouse again")

    @property
    def total_mib(self) -> float:
        return sum(w["bytes"] for w in self.wheels) / 2**20

    def mcore_versions(self) -> list[str]:
        return list(self.mcore.get("versions") or [])

    def baseline_mcore(self, requested: Optional[str]) -> Optional[str]:
        """The megatron-core the GPU steps use: --mcore, else the version pinned when the wheelhouse
        was made (the line CI tests), else what our requirement resolves to."""
        versions = self.mcore_versions()
        if requested:
            if requested not in versions:
                raise CheckError(f"--mcore {requested}: the wheelhouse holds megatron-core {', '.join(versions) or 'none'}")
            return requested
        pinned = [v for v in self.mcore.get("requested", []) if v != "newest" and v in versions]
        return pinned[0] if pinned else self.mcore.get("project") or (versions[0] if versions else None)

    def install_specs(self, mcore: Optional[str]) -> list[str]:
        extras = ",".join(self.project.get("extras") or [])
        specs = [f"{self.project['name']}{f'[{extras}]' if extras else ''}=={self.project['version']}"]
        specs += list(self.manifest.get("also", []))
        if mcore:
            specs.append(f"megatron-core=={mcore}")
        return specs

    def fit(self) -> dict:
        """Which wheels this interpreter can install (by wheel tags)."""
        try:
            from packaging.tags import sys_tags
            from packaging.utils import parse_wheel_filename
        except ImportError:
            try:
                from pip._vendor.packaging.tags import sys_tags
                from pip._vendor.packaging.utils import parse_wheel_filename
            except ImportError:
                return {"known": False, "fit": [], "unfit": []}
        supported = set(sys_tags())
        fit, unfit = [], []
        for w in self.wheels:
            tags = parse_wheel_filename(w["file"])[3]
            (fit if tags & supported else unfit).append(w["file"])
        return {"known": True, "fit": fit, "unfit": unfit}

    def foreign_requirements(self, specs: list[str]) -> list[dict]:
        """Requirements of the wheels that would be installed on packages the wheelhouse lacks,
        checked against this interpreter's installed versions (what the node must provide itself)."""
        try:
            from packaging.requirements import Requirement
            from packaging.utils import canonicalize_name
        except ImportError:
            return []
        from importlib import metadata

        inside = {w["name"] for w in self.wheels}
        by_name = {w["name"]: w for w in self.wheels}
        wanted = [Requirement(s) for s in specs]
        seen, out, queue = set(), {}, list(wanted)
        while queue:
            req = queue.pop()
            name = canonicalize_name(req.name)
            if name in inside:
                if name in seen:
                    continue
                seen.add(name)
                entry = by_name[name]
                if name == "megatron-core":  # several versions: use the one asked for
                    pick = [w for w in self.wheels if w["name"] == name and req.specifier.contains(w["version"])]
                    entry = pick[0] if pick else entry
                for line in entry["requires"]:
                    r = Requirement(line)
                    env_extras = ("", *sorted(req.extras))
                    if r.marker is None or any(r.marker.evaluate({"extra": e}) for e in env_extras):
                        queue.append(r)
                continue
            try:
                have = metadata.version(req.name)
            except metadata.PackageNotFoundError:
                have = None
            ok = have is not None and req.specifier.contains(have, prereleases=True)
            key = (name, str(req.specifier))
            out[key] = {"requirement": f"{name}{req.specifier}", "installed": have, "ok": ok}
        return sorted(out.values(), key=lambda d: d["requirement"])


# --------------------------------------------------------------------------- a throwaway environment


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


# --------------------------------------------------------------------------- steps and results


@dataclass
class Result:
    name: str
    title: str
    limit_s: int
    status: str = "pending"  # ok | failed | skipped | timeout
    seconds: float = 0.0
    figures: dict = field(default_factory=dict)
    reason: Optional[str] = None
    details: dict = field(default_factory=dict)
    log: Optional[str] = None


@dataclass
class Step:
    name: str
    title: str
    limit_s: int
    needs: tuple[str, ...]  # env, cuda, te, generate, newer-mcore
    run: Callable[["Check", Result], None]


class StepTimeout(Exception):
    pass


class StepFailed(Exception):
    pass


class Check:
    def __init__(self, args):
        self.args = args
        self.out = Path(args.out).resolve()
        self.wh = Wheelhouse(Path(args.wheelhouse))
        self.mcore = self.wh.baseline_mcore(args.mcore)
        self.newest = self.wh.mcore.get("newest")
        self.env_dir = self.out / "env"
        self.python: Optional[Path] = None
        self.pip: list[str] = []
        self.probe: dict = {}
        self.results: list[Result] = []
        self.started = time.time()
        self.deadline = self.started + args.budget_s
        self._log_file = None

    # -- plumbing
    def log(self, msg: str) -> None:
        line = f"[gpu_check] {msg}"
        print(line, flush=True)
        if self._log_file:
            self._log_file.write(line + "\n")
            self._log_file.flush()

    def env_python(self) -> Optional[Path]:
        python = self.env_dir / "venv" / "bin" / "python"
        return python if python.exists() else None

    def run_cmd(self, result: Result, cmd: list[str], timeout: float, cwd: Path = REPO,
                env: Optional[dict] = None, tag: str = "") -> subprocess.CompletedProcess:
        """Run `cmd` in its own process group with the output appended to the step's log; raise
        StepTimeout when it outlives `timeout` (the whole group is killed: torchrun has children)."""
        log_path = self.out / "logs" / f"{result.name}.log"
        result.log = str(log_path.relative_to(self.out))
        with open(log_path, "a") as fh:
            fh.write(f"\n$ {' '.join(map(str, cmd))}   (cwd {cwd}, limit {timeout:.0f} s)\n")
            fh.flush()
            proc = subprocess.Popen([str(c) for c in cmd], cwd=cwd, env=env or offline_env(), stdout=fh,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            try:
                rc = proc.wait(timeout=max(1.0, timeout))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                raise StepTimeout(f"{tag or Path(str(cmd[0])).name} ran past {timeout:.0f} s")
        return subprocess.CompletedProcess(cmd, rc)

    def tail(self, result: Result, n: int = 3) -> str:
        if not result.log:
            return ""
        lines = [l for l in (self.out / result.log).read_text(errors="replace").splitlines() if l.strip()]
        return " | ".join(lines[-n:])[-400:]

    def ensure_probe(self) -> None:
        """Describe the environment the next steps run in (the install step's venv when there is one)."""
        if self.probe:
            return
        self.python = self.env_python()
        pip_file = self.env_dir / "pip.json"
        self.pip = json.loads(pip_file.read_text()) if self.python and pip_file.is_file() else []
        self.probe = probe_environment(self.python or Path(sys.executable))
        self.log(f"environment: {describe_probe(self.probe)}")

    # -- the run
    def run(self) -> int:
        (self.out / "logs").mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.out / "logs" / "gpu_check.log", "a")
        self.wh.verify()
        self.log(f"wheelhouse {self.wh.path}: {len(self.wh.wheels)} wheels, {self.wh.total_mib:.1f} MiB, sha256 ok")
        steps = plan_steps(self.args)
        self.results = [Result(s.name, s.title, s.limit_s) for s in steps]
        self.write_summary()
        env_ok = self.env_python() is not None  # a previous run's env, when install is not a step here
        for step, result in zip(steps, self.results):
            if step.name != "install":
                self.ensure_probe()
            reason = unmet(step, self.probe, env_ok, self.mcore, self.newest)
            remaining = self.deadline - time.time()
            if reason is None and remaining < 10:
                reason = f"the {self.args.budget_s:.0f} s budget is spent"
            if reason is not None:
                result.status, result.reason = "skipped", reason
                self.log(f"{step.name}: skipped ({reason})")
                self.write_summary()
                continue
            limit = min(step.limit_s, remaining)
            self.log(f"{step.name}: {step.title} (limit {limit:.0f} s)")
            t0 = time.time()
            result.details["limit_effective_s"] = round(limit)
            try:
                step.run(self, result, t0 + limit)
                if result.status == "pending":
                    result.status = "ok"
            except StepTimeout as e:
                result.status, result.reason = "timeout", f"{e} (step limit {limit:.0f} s)"
            except StepFailed as e:
                result.status, result.reason = "failed", str(e)
            except Exception as e:  # a bug in a step must not stop the others
                result.status, result.reason = "failed", f"{type(e).__name__}: {e}"
            result.seconds = round(time.time() - t0, 1)
            if step.name == "install":
                env_ok = result.status == "ok"
                self.probe = {}  # the next step describes the new environment
            self.log(f"{step.name}: {result.status} in {result.seconds:.0f} s"
                     + (f" -- {result.reason}" if result.reason else "")
                     + (f" -- {format_figures(result.figures)}" if result.figures else ""))
            self.write_summary()
        self.ensure_probe()
        self.write_summary()
        self.log(f"done in {time.time() - self.started:.0f} s: {self.out / 'gpu_check.md'}")
        return 0 if all(r.status in ("ok", "skipped") for r in self.results) else 1

    # -- reports
    def header(self) -> dict:
        p = self.probe or {}
        return {"format": 1, "started": datetime.datetime.fromtimestamp(self.started).isoformat(timespec="seconds"),
                "seconds": round(time.time() - self.started, 1), "budget_s": self.args.budget_s,
                "host": platform.node(), "python": p.get("python") or platform.python_version(),
                "torch": p.get("torch"), "cuda": p.get("cuda_version"), "device": p.get("device"),
                "device_count": p.get("device_count"), "megatron_core": self.mcore,
                "megatron_core_newest": self.newest,
                "wheelhouse": {"path": str(self.wh.path), "python": self.wh.manifest.get("python"),
                               "mib": round(self.wh.total_mib, 1), "wheels": len(self.wh.wheels)},
                "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])}

    def write_summary(self) -> None:
        data = {**self.header(), "steps": [dataclasses.asdict(r) for r in self.results]}
        (self.out / "gpu_check.json").write_text(json.dumps(data, indent=1) + "\n")
        (self.out / "gpu_check.md").write_text(render_markdown(data))


def plan_steps(args) -> list[Step]:
    lim = args.limits
    return [s for s in (
        Step("install", "install from the wheelhouse (no index)", lim["install"], (), step_install),
        Step("gpu-tests", "pytest -m gpu", lim["gpu-tests"], ("env", "cuda"), step_gpu_tests),
        Step("train", "Llama-3.2-1B shape, bf16, local spec", lim["train"], ("env", "cuda"), step_train),
        Step("train-fp8", "the same, Transformer Engine spec, FP8", lim["train-fp8"], ("env", "cuda", "te"),
             step_train_fp8),
        Step("units", "HuBERT units on GPU batches", lim["units"], ("env", "cuda"), step_units),
        Step("generate", "generation benchmark", lim["generate"], ("env", "cuda", "generate"), step_generate),
        Step("cpu-suite", "CPU suite on the newest megatron-core", lim["cpu-suite"], ("env", "newer-mcore"),
             step_cpu_suite),
    ) if s.name in args.steps]


def unmet(step: Step, probe: dict, env_ok: bool, mcore: Optional[str], newest: Optional[str]) -> Optional[str]:
    """Why `step` cannot run in the environment `probe` describes (None: it can)."""
    for need in step.needs:
        if need == "env" and not env_ok:
            return "needs the install step, which did not succeed"
        if need == "cuda" and not probe.get("cuda"):
            return "no CUDA device" + (f" ({probe['error']})" if probe.get("error") else "")
        if need == "te" and not probe.get("te"):
            return TE_ABSENT_REASON
        if need == "generate" and not (BENCH / "generate.py").is_file():
            return "bench/generate.py not available yet"
        if need == "newer-mcore" and (not newest or newest == mcore):
            return (f"the wheelhouse holds no megatron-core newer than {mcore}" if mcore else
                    "the wheelhouse holds no megatron-core")
    return None


def format_figures(fig: dict) -> str:
    parts = []
    for k, v in fig.items():
        if isinstance(v, float):
            v = f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
        parts.append(f"{k} {v}")
    return ", ".join(parts)


def render_markdown(data: dict) -> str:
    dev = data.get("device") or "no CUDA device"
    lines = [
        "## GPU check (bench/gpu_check.py)", "",
        f"`python bench/gpu_check.py --wheelhouse wh/ --out gpu_check/` on {dev}"
        f"{' x' + str(data['device_count']) if data.get('device_count') else ''}, Python {data['python']}, "
        f"torch {data.get('torch') or '?'} (CUDA {data.get('cuda') or '-'}), megatron-core {data.get('megatron_core')} "
        f"(newest in the wheelhouse {data.get('megatron_core_newest')}); wheelhouse for CPython "
        f"{data['wheelhouse']['python']}, {data['wheelhouse']['wheels']} wheels, {data['wheelhouse']['mib']} MiB. "
        f"Started {data['started']}, {data['seconds']:.0f} s in all (budget {data['budget_s']:.0f} s).", "",
        "| step | status | time | figures | notes |", "|---|---|---|---|---|"]
    for s in data["steps"]:
        time_s = f"{s['seconds']:.0f} s / {s['limit_s']} s" if s["status"] not in ("skipped", "pending") else "–"
        note = s.get("reason") or s["details"].get("note") or ""
        lines.append(f"| {s['name']} ({s['title']}) | {s['status']} | {time_s} | "
                     f"{format_figures(s['figures']) or '–'} | {note.replace('|', '/')} |")
    for s in data["steps"]:
        d = s["details"]
        if d.get("not_run"):
            lines += ["", f"{s['name']}: tests that cannot run here, and why:"]
            lines += [f"- `{t['nodeid']}`: {t['reason']}" for t in d["not_run"]]
        if d.get("failed"):
            lines += ["", f"{s['name']}: failed tests:"]
            lines += [f"- `{t['nodeid']}`: {t.get('reason') or ''}"
                      + (f" ({t['baseline']})" if t.get("baseline") else "") for t in d["failed"]]
        if d.get("command"):
            lines += ["", f"{s['name']} command: `{d['command']}`"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- environment probe

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


# --------------------------------------------------------------------------- step: install


def step_install(check: Check, result: Result, deadline: float) -> None:
    hide = {w["name"] for w in check.wh.wheels}
    logs = []
    python, pip = make_env(check.env_dir, hide, logs.append)
    for line in logs:
        check.log(f"install: {line}")
    specs = check.wh.install_specs(check.mcore)
    cmd = [*pip, "install", "--no-index", "--find-links", str(check.wh.path), "--no-input", *specs]
    result.details["command"] = " ".join(["pip", *cmd[len(pip):]])
    if check.run_cmd(result, cmd, deadline - time.time()).returncode != 0:
        raise StepFailed(f"pip install from the wheelhouse failed: {check.tail(result)}")
    # From outside the checkout: the installed package, not the source tree, must answer.
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "import.json"
        code = ("import json, sys, megatron_slm, megatron.core, torch; from importlib import metadata; "
                "d = metadata.distribution('megatron-slm'); "
                "json.dump({'megatron_slm': megatron_slm.__file__, 'megatron_slm_version': d.version, "
                "'megatron_core': megatron.core.__version__, 'torch': torch.__version__, 'prefix': sys.prefix, "
                "'scripts': sorted(e.name for e in d.entry_points if e.group == 'console_scripts')}, "
                f"open({str(report)!r}, 'w'))")
        if check.run_cmd(result, [python, "-c", code], deadline - time.time(), cwd=Path(tmp)).returncode != 0:
            raise StepFailed(f"importing the installed megatron_slm failed: {check.tail(result)}")
        info = json.loads(report.read_text())
    if not Path(info["megatron_slm"]).resolve().is_relative_to(check.env_dir.resolve()):
        raise StepFailed(f"megatron_slm was imported from {info['megatron_slm']}, not from the wheelhouse install")
    result.figures.update({"megatron-slm": info["megatron_slm_version"], "megatron-core": info["megatron_core"],
                           "torch": info["torch"]})
    scripts = info["scripts"]
    if scripts:
        script = "slm-estimate-memory" if "slm-estimate-memory" in scripts else scripts[0]
        exe = python.parent / script
        if check.run_cmd(result, [exe, "--help"], deadline - time.time(), cwd=Path(tempfile.gettempdir())).returncode:
            raise StepFailed(f"console script {script} --help failed: {check.tail(result)}")
        result.figures["console script"] = f"{script} ok"
    else:
        result.details["note"] = "the wheel declares no console scripts"
    check.python, check.pip = python, pip


# --------------------------------------------------------------------------- pytest plumbing


_ROOTDIR: Optional[Path] = None


def pytest_configure(config):  # pytest hooks: this module is loaded with `-p gpu_check` (PYTHONPATH=bench)
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


def run_pytest(check: Check, result: Result, args: list[str], timeout: float, python: Path,
               extra_env: dict, log_name: str, cwd: Path = REPO) -> dict[str, dict]:
    """Run pytest with this module as a plugin that logs every test's outcome as it happens (so a
    run cut by its time limit still reports what ran); raise StepFailed when pytest itself broke."""
    log_path = check.out / "logs" / log_name
    log_path.unlink(missing_ok=True)
    extra = dict(extra_env)
    path = [p for p in (extra.pop("PYTHONPATH", None), str(BENCH)) if p]  # BENCH: `-p gpu_check` below
    env = offline_env({"OMP_NUM_THREADS": "4", **extra, "PYTHONPATH": os.pathsep.join(path),
                       PYTEST_LOG_ENV: str(log_path)})
    cmd = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "gpu_check", "-rfs", *args]
    try:
        rc = check.run_cmd(result, cmd, timeout, cwd=cwd, env=env, tag="pytest").returncode
    except StepTimeout:
        result.details["partial"] = read_test_log(log_path)
        raise
    if rc not in (0, 1, 5):  # 1: some tests failed, 5: none collected; others: pytest could not run
        raise StepFailed(f"pytest exited with {rc}: {check.tail(result)}")
    return read_test_log(log_path)


# --------------------------------------------------------------------------- step: gpu tests


def step_gpu_tests(check: Check, result: Result, deadline: float) -> None:
    tests = {}
    try:
        tests = run_pytest(check, result, ["-m", "gpu", f"--timeout={check.args.test_timeout}", "tests"],
                           deadline - time.time(), check.python, {}, "gpu-tests.jsonl")
    finally:
        tests = tests or result.details.pop("partial", {})
        _report_tests(result, tests)
    n = count_outcomes(tests)
    if n["failed"]:
        raise StepFailed(f"{n['failed']} of {len(tests)} gpu tests failed")
    if not n["passed"]:
        result.status = "skipped"
        result.reason = f"none of the {len(tests)} gpu tests can run here (reasons below)"


def _report_tests(result: Result, tests: dict[str, dict]) -> None:
    result.figures.update(count_outcomes(tests))
    result.details["not_run"] = [{"nodeid": k, "reason": t["reason"]} for k, t in sorted(tests.items())
                                 if t["outcome"] == "skipped"]
    result.details["failed"] = [{"nodeid": k, "reason": t["reason"], "rerun": t.get("rerun", k)}
                                for k, t in sorted(tests.items()) if t["outcome"] == "failed"]


# --------------------------------------------------------------------------- step: training


def train_overrides(args, fp8: bool) -> list[str]:
    """A Llama-3.2-1B with the SIMS vocabulary (128256 text + 500 units + 2 markers) on synthetic
    tokens; tiny_cpu.yaml supplies the rest, everything that matters is set here."""
    o = [f"model.preset={args.train_preset}", f"model.vocab_size={args.train_vocab}", "runtime.device=cuda",
         "runtime.backend=nccl", "precision.dtype=bf16", f"train.seq_length={args.seq_length}",
         f"train.micro_batch_size={args.micro_batch}", f"train.global_batch_size={args.global_batch}",
         f"train.iters={args.train_steps}", "train.eval_iters=1", "optimizer.lr=3.0e-4", "optimizer.min_lr=3.0e-5",
         "optimizer.warmup_iters=2", "optimizer.clip_grad=1.0", "data.source=synthetic", "data.num_workers=0",
         "logging.interval=1", "logging.tensorboard=false", "runtime.timeout_minutes=5"]
    if fp8:
        o += ["model.spec=te", "precision.fp8=hybrid", "precision.fp8_recipe=delayed"]
    else:
        o += ["model.spec=local"]
    return o


def train_figures(metrics: Path, warmup: int) -> dict:
    lines = [json.loads(l) for l in metrics.read_text().splitlines() if l.strip()] if metrics.is_file() else []
    train = [l for l in lines if not l.get("validation") and not l.get("eval") and "tokens_per_sec" in l]
    if not train:
        return {}
    steady = train[warmup:] or train[-1:]

    def med(key):
        vals = [l[key] for l in steady if l.get(key) is not None]
        return statistics.median(vals) if vals else None

    fig = {"steps": len(train), "tokens/s": med("tokens_per_sec"), "TFLOP/s per GPU": med("model_tflops_per_gpu"),
           "MFU %": 100 * med("mfu") if med("mfu") is not None else None, "peak memory GiB": max((l.get("max_memory_gib") or 0) for l in train) or None,
           "step s": med("step_time_s"), "loss first": train[0].get("lm_loss"), "loss last": train[-1].get("lm_loss")}
    return {k: v for k, v in fig.items() if v is not None}


def _train(check: Check, result: Result, deadline: float, fp8: bool) -> None:
    run_dir = check.out / result.name
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    cmd = [check.python, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
           REPO / "pretrain_slm.py", "--config", REPO / "examples" / "configs" / "tiny_cpu.yaml",
           *train_overrides(check.args, fp8)]
    result.details["command"] = "torchrun --nproc_per_node=1 pretrain_slm.py --config examples/configs/tiny_cpu.yaml " \
                                + " ".join(train_overrides(check.args, fp8))
    result.details["note"] = (f"{check.args.train_preset}, vocab {check.args.train_vocab}, seq {check.args.seq_length}, "
                              f"global batch {check.args.global_batch} (micro {check.args.micro_batch}), "
                              f"median over steps after the first {check.args.warmup_steps}")
    try:
        rc = check.run_cmd(result, cmd, deadline - time.time(), cwd=run_dir,
                           env=offline_env({"OMP_NUM_THREADS": "8"}), tag="training").returncode
    finally:
        result.figures.update(train_figures(run_dir / "metrics.jsonl", check.args.warmup_steps))
    if rc != 0:
        raise StepFailed(f"training exited with {rc}: {check.tail(result)}")
    if not result.figures:
        raise StepFailed("training wrote no metrics")


def step_train(check: Check, result: Result, deadline: float) -> None:
    _train(check, result, deadline, fp8=False)


def step_train_fp8(check: Check, result: Result, deadline: float) -> None:
    _train(check, result, deadline, fp8=True)


# --------------------------------------------------------------------------- step: units


def step_units(check: Check, result: Result, deadline: float) -> None:
    out = check.out / "units"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    cmd = [check.python, Path(__file__).resolve(), "--worker", "units", "--out", out,
           "--units-seconds", str(check.args.units_seconds)]
    try:
        rc = check.run_cmd(result, cmd, deadline - time.time(), env=offline_env({"OMP_NUM_THREADS": "8"}),
                           tag="unit extraction").returncode
    finally:
        report = out / "units.json"
        if report.is_file():
            data = json.loads(report.read_text())
            result.figures.update(data["figures"])
            result.details["note"] = data["note"]
    if rc != 0:
        raise StepFailed(f"unit extraction exited with {rc}: {check.tail(result)}")


def _load_bench_module(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def units_worker(out: Path, seconds: float, device: str = "cuda", layer: int = 11, k: int = 500) -> None:
    """On the GPU: the CPU bench's random mhubert-base and fitted codebook (bench/extract_units.py),
    the soundfile loader, length-bucketed batches; float32 and bf16 over the same files."""
    import numpy as np
    import torch

    from megatron_slm.audio.decode_soundfile import load_audio
    from megatron_slm.audio.loader import AudioLoader
    from megatron_slm.audio.probe import probe
    from megatron_slm.audio.sources import list_audio_files
    from megatron_slm.units.extractors import HubertExtractor
    from megatron_slm.units.pipeline import UnitExtractor

    cpu_bench = _load_bench_module("extract_units")
    src = list_audio_files(CORPUS_AUDIO)
    secs = [len(load_audio(p)) / 16000 for p in src]
    files = out / "audio"
    files.mkdir()
    paths, total = [], 0.0
    while total < seconds:  # the corpus repeated under distinct names (ids are file stems)
        for p, s in zip(src, secs):
            link = files / f"r{len(paths)}_{Path(p).name}"
            link.symlink_to(Path(p).resolve())
            paths.append(str(link))
            total += s
            if total >= seconds:
                break
    t = time.perf_counter()
    centroids = cpu_bench.fitted_sklearn_kmeans(cpu_bench.mhubert_base_25hz_random(), src, layer, k) \
        .cluster_centers_.astype(np.float32)
    fit_s = time.perf_counter() - t
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    loader = AudioLoader("soundfile", device)
    items = probe(paths)[0]
    t = time.perf_counter()
    for _ in loader.batches(items):
        pass
    sync()
    decode_s = time.perf_counter() - t

    runs, units = {}, {}
    for name, dtype in (("float32", torch.float32), ("bf16", torch.bfloat16)):
        ex = UnitExtractor(HubertExtractor(cpu_bench.mhubert_base_25hz_random(), layer, device=device, dtype=dtype),
                           centroids, loader, collapse=False)
        list(ex.units_for_files(paths[:16]))  # warm-up: kernels, allocator
        sync()
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        units[name] = {r.id: np.asarray(r.units) for r in ex.units_for_files(paths)}
        sync()
        runs[name] = {"seconds": time.perf_counter() - t,
                      "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else 0.0}
        del ex
        if device == "cuda":
            torch.cuda.empty_cache()
    a, b = units["float32"], units["bf16"]
    agree = float(np.mean([np.mean(a[i] == b[i]) if a[i].size == b[i].size else 0.0 for i in a]))
    figures = {"audio s": round(total), "bf16 audio s/s": total / runs["bf16"]["seconds"],
               "float32 audio s/s": total / runs["float32"]["seconds"],
               "bf16 / float32": runs["float32"]["seconds"] / runs["bf16"]["seconds"],
               "units equal bf16 vs float32 %": 100 * agree, "decode-only audio s/s": total / decode_s,
               "peak memory GiB": max(r["peak_gib"] for r in runs.values())}
    note = (f"random mhubert-base (12 layers, 768 hidden, 25 Hz), layer {layer}, K={k} codebook fitted on its "
            f"features ({fit_s:.0f} s on CPU), {len(paths)} files, soundfile loader (DALI absent), batches of "
            f"<= {loader.max_batch_seconds:g} s; end-to-end times include decoding")
    (out / "units.json").write_text(json.dumps({"figures": figures, "note": note, "runs": runs}, indent=1))
    print(json.dumps(figures))


# --------------------------------------------------------------------------- step: generation


def step_generate(check: Check, result: Result, deadline: float) -> None:
    script = BENCH / "generate.py"
    out = check.out / "generate"
    out.mkdir(parents=True, exist_ok=True)
    helptext = subprocess.run([str(check.python), str(script), "--help"], capture_output=True, text=True,
                              cwd=REPO, env=offline_env(), timeout=60).stdout
    cmd = [check.python, script]
    if "--device" in helptext:
        cmd += ["--device", "cuda"]
    report = out / "generate.json"
    for flag in ("--json", "--out"):
        if flag in helptext:
            cmd += [flag, report]
            break
    result.details["command"] = " ".join(["python", "bench/generate.py", *map(str, cmd[2:])])
    rc = check.run_cmd(result, cmd, deadline - time.time(), tag="bench/generate.py").returncode
    if report.is_file():
        try:
            data = json.loads(report.read_text())
            result.figures.update({k: v for k, v in data.items() if isinstance(v, (int, float, str))} if
                                  isinstance(data, dict) else {})
        except ValueError:
            pass
    if not result.figures:
        result.details["note"] = f"output: {check.tail(result, 4)}"
    if rc != 0:
        raise StepFailed(f"bench/generate.py exited with {rc}: {check.tail(result)}")


# --------------------------------------------------------------------------- step: CPU suite


def cpu_suite_files() -> list[str]:
    """Test files, those that exercise megatron-core first."""
    files = sorted((REPO / "tests").glob("test_*.py"))
    first = [f for f in files if any(h in f.read_text(errors="replace") for h in MCORE_HINTS)]
    return [str(f.relative_to(REPO)) for f in first + [f for f in files if f not in first]]


def step_cpu_suite(check: Check, result: Result, deadline: float) -> None:
    overlay = check.out / f"megatron-core-{check.newest}"
    shutil.rmtree(overlay, ignore_errors=True)
    cmd = [*check.pip, "install", "--no-index", "--find-links", str(check.wh.path), "--no-deps", "--target",
           str(overlay), f"megatron-core=={check.newest}"]
    if check.run_cmd(result, cmd, deadline - time.time()).returncode != 0:
        raise StepFailed(f"installing megatron-core {check.newest} from the wheelhouse failed: {check.tail(result)}")
    hidden_gpu = {"CUDA_VISIBLE_DEVICES": ""}  # the CPU-portable part: no test may pick the GPU
    got = probe_environment(check.python, {"PYTHONPATH": str(overlay), **hidden_gpu})
    if got.get("megatron_core") != check.newest:
        raise StepFailed(f"with the overlay, megatron.core imports as {got.get('megatron_core')}, "
                         f"not {check.newest}: {got.get('error', '')}")
    result.figures["megatron-core"] = check.newest
    marker = "not gpu and not slow"
    result.details["command"] = f"pytest -m '{marker}' (megatron-core {check.newest}, CUDA hidden)"
    suite_deadline = deadline - min(60.0, 0.25 * (deadline - time.time()))  # leave time for the rerun
    tests = {}
    try:
        tests = run_pytest(check, result, ["-m", marker, f"--timeout={check.args.test_timeout}",
                                           *(check.args.cpu_tests or cpu_suite_files())],
                           suite_deadline - time.time(), check.python, {"PYTHONPATH": str(overlay), **hidden_gpu},
                           "cpu-suite.jsonl")
        cut = None
    except StepTimeout as e:
        tests, cut = result.details.pop("partial", {}), str(e)
    _report_tests(result, tests)
    result.details.pop("not_run", None)  # skips here are the usual CPU ones (no espeak, ...), not findings
    failed = [t["rerun"] for t in result.details["failed"]]
    if failed and deadline - time.time() > 15:  # the same tests on the baseline megatron-core
        try:
            base = run_pytest(check, result, [f"--timeout={check.args.test_timeout}", *failed],
                              deadline - time.time(), check.python, dict(hidden_gpu), "cpu-suite-baseline.jsonl")
        except StepTimeout:
            base = result.details.pop("partial", {})
        for t in result.details["failed"]:
            b = base.get(t["nodeid"]) or next((v for v in base.values() if v.get("rerun") == t["rerun"]), None)
            t["baseline"] = (f"fails on {check.mcore} too" if b and b["outcome"] == "failed" else
                             f"passes on {check.mcore}" if b and b["outcome"] == "passed" else
                             f"not rerun on {check.mcore}")
        result.figures["fail only past the baseline"] = sum(1 for t in result.details["failed"]
                                                            if t["baseline"].startswith("passes"))
    if cut:
        raise StepTimeout(f"{cut}; {len(tests)} tests had run")
    if failed:
        raise StepFailed(f"{len(failed)} tests fail on megatron-core {check.newest}")


# --------------------------------------------------------------------------- dry run


class _HideModules:
    """sys.meta_path wrapper: the hidden top-level modules (and their submodules) are not found."""

    def __init__(self, finder, hidden: tuple[str, ...]):
        self.finder, self.hidden = finder, hidden

    def find_spec(self, name, path=None, target=None):
        if any(name == h or name.startswith(h + ".") for h in self.hidden):
            return None
        find = getattr(self.finder, "find_spec", None)
        return find(name, path, target) if find else None

    def invalidate_caches(self):
        if hasattr(self.finder, "invalidate_caches"):
            self.finder.invalidate_caches()


def collect_worker(out: Path, devices: int, absent: tuple[str, ...]) -> None:
    """Collect the gpu-marked tests as they would be on a node with `devices` CUDA devices (0: the
    real ones) and without the modules `absent`, and write which would run and why not."""
    if absent:
        sys.meta_path[:] = [_HideModules(f, absent) for f in sys.meta_path]
    if devices:
        import torch

        torch.cuda.is_available = lambda: True
        torch.cuda.device_count = lambda: devices
    import pytest

    found: list[dict] = []

    class Collector:
        @pytest.hookimpl(trylast=True)
        def pytest_collection_modifyitems(self, session, config, items):
            for item in items:
                if "gpu" not in item.keywords:
                    continue
                reasons = [m.kwargs.get("reason") or (m.args[0] if m.args else "skip")
                           for m in item.iter_markers("skip")]
                for m in item.iter_markers("skipif"):
                    conds = m.args or ((m.kwargs["condition"],) if "condition" in m.kwargs else ())
                    for c in conds:
                        if isinstance(c, str):
                            reasons.append(f"{m.kwargs.get('reason') or c} (condition decided at run time)")
                        elif c:
                            reasons.append(m.kwargs.get("reason") or "skipif")
                found.append({"nodeid": item.nodeid, "runs": not reasons, "reasons": list(dict.fromkeys(reasons))})

    code = pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", "-m", "gpu", str(REPO / "tests")],
                       plugins=[Collector()])
    out.write_text(json.dumps({"exit": int(code), "tests": found}, indent=1))


_TRAIN_CHECK = r"""
import json, sys
from megatron_slm.config import load_config
from megatron_slm.models.flops import param_counts, training_flops_per_token
from megatron_slm.models.presets import get_preset
cfg = load_config(sys.argv[1], sys.argv[2:])
m = cfg.model
arch = get_preset(m.preset).replace(vocab_size=m.vocab_size or get_preset(m.preset).vocab_size)
tokens = cfg.train.global_batch_size * cfg.train.seq_length
print(json.dumps({"params": param_counts(arch).total, "tokens_per_step": tokens,
                  "tflop_per_step": training_flops_per_token(arch, cfg.train.seq_length) * tokens / 1e12}))
"""


def check_train_config(args, fp8: bool) -> dict:
    """Load the training step's config with its overrides (the schema rejects a renamed key) and
    size the model, without torch: a mistake is found here, not on the node."""
    cmd = [sys.executable, "-c", _TRAIN_CHECK, str(REPO / "examples" / "configs" / "tiny_cpu.yaml"),
           *train_overrides(args, fp8)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120,
                          env=offline_env({"PYTHONPATH": str(REPO)}))
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def check_units_helpers() -> Optional[str]:
    """The units step borrows the CPU bench's model and codebook builders: still there?"""
    import ast

    names = {n.name for n in ast.parse((BENCH / "extract_units.py").read_text()).body if isinstance(n, ast.FunctionDef)}
    missing = {"mhubert_base_25hz_random", "fitted_sklearn_kmeans"} - names
    return f"bench/extract_units.py no longer defines {', '.join(sorted(missing))}" if missing else None


def predict_gpu_tests(simulate: bool, timeout: float = 180) -> dict:
    if importlib.util.find_spec("pytest") is None:
        return {"error": "pytest is not importable here (it comes with the wheelhouse): known after install"}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "collected.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "collect", "--out", str(out)]
        if simulate:
            cmd += ["--simulate-devices", "1", "--absent", ",".join(NODE_ABSENT)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO,
                                  env=offline_env({"CUDA_VISIBLE_DEVICES": ""} if simulate else {}))
        except subprocess.TimeoutExpired:
            return {"error": f"collecting the gpu tests took over {timeout:.0f} s"}
        if not out.is_file():
            return {"error": f"collecting the gpu tests failed: {(proc.stderr or proc.stdout).strip()[-400:]}"}
        return json.loads(out.read_text())


def dry_run(args) -> int:
    out = Path(args.out).resolve()
    wh = Wheelhouse(Path(args.wheelhouse))
    wh.verify()
    mcore = wh.baseline_mcore(args.mcore)
    newest = wh.mcore.get("newest")
    fit = wh.fit()
    specs = wh.install_specs(mcore)
    here = probe_environment(Path(sys.executable))
    simulate = not here.get("cuda")
    target = dict(here)
    if simulate:  # predict for the documented node: one CUDA device, no TE, no DALI
        target.update(cuda=True, device="(the node's GPU)", device_count=1, te=False, dali=False, error=None)
    gpu_tests = predict_gpu_tests(simulate) if "gpu-tests" in args.steps else {}

    unfit = fit["unfit"]
    install_ok = not unfit
    planned, total = [], 0
    for step in plan_steps(args):
        reason = unmet(step, target, install_ok, mcore, newest)
        entry = {"name": step.name, "title": step.title, "limit_s": step.limit_s,
                 "status": "run" if reason is None else "skip", "reason": reason}
        if step.name == "install":
            entry["command"] = "pip install --no-index --find-links " + str(wh.path) + " " + " ".join(specs)
            if unfit:
                entry.update(status="fail", reason=f"{len(unfit)} wheels do not fit this Python "
                                                    f"{platform.python_version()} (the wheelhouse is for "
                                                    f"{wh.manifest.get('python')}): {', '.join(unfit[:3])}")
        elif step.name == "gpu-tests" and gpu_tests:
            if "error" in gpu_tests:
                entry["note"] = gpu_tests["error"]
            else:
                tests = gpu_tests["tests"]
                entry["tests"] = tests
                runnable = [t for t in tests if t["runs"]]
                entry["note"] = f"{len(runnable)} of {len(tests)} gpu tests can run"
                entry["not_run"] = [{"nodeid": t["nodeid"], "reason": "; ".join(t["reasons"])}
                                    for t in tests if not t["runs"]]
        elif step.name in ("train", "train-fp8"):
            entry["command"] = "torchrun --nproc_per_node=1 pretrain_slm.py --config examples/configs/tiny_cpu.yaml " \
                               + " ".join(train_overrides(args, step.name == "train-fp8"))
            sized = check_train_config(args, step.name == "train-fp8")
            if "error" in sized:
                entry.update(status="fail", reason=f"the training config does not load: {sized['error']}")
            else:
                entry["model"] = sized
                entry["note"] = (f"{sized['params'] / 1e9:.2f} B parameters, {sized['tokens_per_step']} tokens and "
                                 f"{sized['tflop_per_step']:.0f} TFLOP per step, {args.train_steps} steps")
        elif step.name == "units":
            problem = check_units_helpers()
            if problem:
                entry.update(status="fail", reason=problem)
        elif step.name == "cpu-suite" and newest:
            entry["command"] = f"pytest -m 'not gpu and not slow' with megatron-core {newest} (CUDA hidden); " \
                               f"failures rerun on {mcore}"
            entry["files"] = args.cpu_tests or cpu_suite_files()
        if entry["status"] == "run":
            total += step.limit_s
        planned.append(entry)

    plan = {"wheelhouse": {"path": str(wh.path), "python": wh.manifest.get("python"),
                           "platforms": wh.manifest.get("platforms", [])[:1], "wheels": len(wh.wheels),
                           "mib": round(wh.total_mib, 1), "sha256": "ok",
                           "megatron_core": {"versions": wh.mcore_versions(), "baseline": mcore, "newest": newest,
                                             "project": wh.mcore.get("project")},
                           "fit_here": {"python": platform.python_version(), "known": fit["known"],
                                        "fit": len(fit["fit"]), "unfit": unfit},
                           "install": specs, "node_must_provide": wh.foreign_requirements(specs)},
            "here": here, "predicted_for": "the documented node (1 CUDA device, no " + ", ".join(NODE_ABSENT) +
            "; simulated: no CUDA here)" if simulate else "this machine",
            "budget_s": args.budget_s, "limits_total_s": total, "steps": planned}
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check_plan.json").write_text(json.dumps(plan, indent=1) + "\n")
    print_plan(plan)
    return 0


def print_plan(plan: dict) -> None:
    w = plan["wheelhouse"]
    m = w["megatron_core"]
    print(f"wheelhouse {w['path']}: CPython {w['python']} on {', '.join(w['platforms'])}, {w['wheels']} wheels, "
          f"{w['mib']} MiB, sha256 ok")
    print(f"  megatron-core in it: {', '.join(m['versions']) or 'none'} (GPU steps use {m['baseline']}; our pin "
          f"resolves to {m['project']}; cpu-suite uses the newest, {m['newest']})")
    f = w["fit_here"]
    print(f"  fits this Python {f['python']}: " + (f"{f['fit']} of {f['fit'] + len(f['unfit'])} wheels"
                                                  + (f"; NOT {len(f['unfit'])}: {', '.join(f['unfit'][:4])}"
                                                     + (", ..." if len(f["unfit"]) > 4 else "") if f["unfit"] else "")
                                                  if f["known"] else "unknown (no packaging module)"))
    print(f"  installs: {' '.join(w['install'])}")
    bad = [r for r in w["node_must_provide"] if not r["ok"]]
    print(f"  this environment must provide {len(w['node_must_provide'])} requirements itself: "
          + (", ".join(f"{r['requirement']} (has {r['installed'] or 'none'})" for r in bad) + " NOT met"
             if bad else "all met"))
    print(f"here: {describe_probe(plan['here'])}")
    print(f"plan for {plan['predicted_for']}; budget {plan['budget_s']:.0f} s, step limits of the steps that run "
          f"{plan['limits_total_s']} s")
    for i, s in enumerate(plan["steps"], 1):
        print(f"  {i}. {s['name']:10s} {s['limit_s']:4d} s  {s['status']:4s}  {s['title']}"
              + (f" -- {s['reason']}" if s.get("reason") else "") + (f" -- {s['note']}" if s.get("note") else ""))
        if s.get("command"):
            print(f"       {s['command']}")
        for t in s.get("not_run", []):
            print(f"       cannot run: {t['nodeid']}: {t['reason']}")


# --------------------------------------------------------------------------- command line

STEP_NAMES = ("install", "gpu-tests", "train", "train-fp8", "units", "generate", "cpu-suite")
DEFAULT_LIMITS = {"install": 45, "gpu-tests": 60, "train": 150, "train-fp8": 90, "units": 90, "generate": 45,
                  "cpu-suite": 90}


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wheelhouse", help="folder made by scripts/make_wheelhouse.sh")
    ap.add_argument("--out", default="gpu_check", help="results folder (default gpu_check/)")
    ap.add_argument("--dry-run", action="store_true", help="resolve the wheelhouse, print the plan, run nothing heavy")
    ap.add_argument("--steps", default=",".join(STEP_NAMES), help=f"comma-separated subset of {', '.join(STEP_NAMES)}")
    ap.add_argument("--budget-s", type=float, default=480, help="all steps together (default 480: 8 minutes)")
    ap.add_argument("--limit", action="append", default=[], metavar="STEP=SECONDS",
                    help="one step's time limit (defaults: " + ", ".join(f"{k} {v}" for k, v in DEFAULT_LIMITS.items())
                    + ")")
    ap.add_argument("--mcore", help="megatron-core version for the install (default: the baseline pinned in the "
                                    "wheelhouse, e.g. 0.16.1)")
    ap.add_argument("--train-preset", default="llama3.2-1b")
    ap.add_argument("--train-vocab", type=int, default=128256 + 502, help="vocabulary (default: Llama-3 + 500 units + 2)")
    ap.add_argument("--train-steps", type=int, default=12)
    ap.add_argument("--warmup-steps", type=int, default=3, help="steps left out of the medians (default 3)")
    ap.add_argument("--seq-length", type=int, default=2048)
    ap.add_argument("--micro-batch", type=int, default=2)
    ap.add_argument("--global-batch", type=int, default=16)
    ap.add_argument("--units-seconds", type=float, default=3600, help="audio per precision (default 3600 s)")
    ap.add_argument("--cpu-tests", type=lambda s: [t for t in s.split(",") if t],
                    help="cpu-suite: comma-separated test files or node ids (default: all, megatron-core users first)")
    ap.add_argument("--test-timeout", type=int, default=120, help="pytest-timeout per test (default 120 s)")
    ap.add_argument("--worker", choices=("units", "collect"), help=argparse.SUPPRESS)
    ap.add_argument("--units-device", default="cuda", help=argparse.SUPPRESS)  # cpu: a smoke run of the worker
    ap.add_argument("--simulate-devices", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--absent", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return args
    if not args.wheelhouse:
        ap.error("--wheelhouse is required")
    args.steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = [s for s in args.steps if s not in STEP_NAMES]
    if unknown:
        ap.error(f"--steps: unknown {', '.join(unknown)} (choose from {', '.join(STEP_NAMES)})")
    args.limits = dict(DEFAULT_LIMITS)
    for item in args.limit:
        name, _, value = item.partition("=")
        if name not in DEFAULT_LIMITS or not value.isdigit():
            ap.error(f"--limit {item!r}: expected STEP=SECONDS with STEP in {', '.join(STEP_NAMES)}")
        args.limits[name] = int(value)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker == "units":
        units_worker(Path(args.out), args.units_seconds, args.units_device)
        return 0
    if args.worker == "collect":
        collect_worker(Path(args.out), args.simulate_devices, tuple(filter(None, args.absent.split(","))))
        return 0
    try:
        if args.dry_run:
            return dry_run(args)
        return Check(args).run()
    except CheckError as e:
        print(f"[gpu_check] error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
