"""Build an offline wheelhouse: the wheels a target environment lacks, for its Python and platform.

    bash scripts/make_wheelhouse.sh --python 3.12 --out wh/                 # the air-gapped GPU node (docs/gpu.md)
    bash scripts/make_wheelhouse.sh --python 3.12 --out wh/ --have node.txt  # what that node has, one name[==version] a line
    WHEELHOUSE=wh/ bash scripts/install.sh                                 # on the node: install from it, no index

Run it on a machine that reaches the package index. It builds this project's wheel, then walks
the requirements (ours with the requested extras, plus --also packages and the megatron-core
versions of --mcore-versions), stopping at every package the target already has (--have, or the
default list of the node in docs/gpu.md), and downloads each missing one as a binary wheel for
--python/--platform with `pip download --no-deps`. Torch and CUDA wheels are never downloaded:
the target must have them. The total is checked against --budget-mib before anything lands in
--out; the wheelhouse gets a manifest.json (name, version, size, sha256, requirements of every
wheel; scripts/gpucheck/manifest.py) that scripts/gpu_check.py reads.
"""
from __future__ import annotations

import argparse
import datetime
import fnmatch
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from email.parser import HeaderParser
from pathlib import Path

from gpucheck.manifest import (MANIFEST, Requirement, SpecifierSet, Version, applicable, canonicalize_name,
                               listed_files, parse_wheel_filename, wheel_entry, write_manifest)

REPO = Path(__file__).resolve().parent.parent
# The documented GPU node (docs/gpu.md): PyTorch with its CUDA stack, transformers and what they
# pull in, and the scientific stack. Patterns are fnmatch-style over canonical names.
DEFAULT_HAVE = """
torch==2.11.0
triton
nvidia-*
filelock
typing-extensions
sympy
mpmath
networkx
jinja2
markupsafe
fsspec
setuptools
transformers
huggingface-hub
hf-xet
tokenizers
safetensors
regex
requests
urllib3
idna
certifi
charset-normalizer
tqdm
packaging
pyyaml
numpy
scipy
scikit-learn
joblib
threadpoolctl
sentencepiece
"""
# Never in a wheelhouse: the target brings its own accelerator stack (GBs, tied to its driver).
FORBIDDEN = ("torch", "torchvision", "torchaudio", "triton", "nvidia-*", "*-cu1[0-9]", "*-cuda*", "cuda-*")
MCORE = "megatron-core"
DEFAULT_MCORE_VERSIONS = "newest,0.16.1"  # the newest for the target Python, and the line CI tests
DEFAULT_ALSO = "soundfile"  # the audio loader without DALI (DALI is ~800 MB: not for a wheelhouse)


class WheelhouseError(RuntimeError):
    """A user-facing failure: one message, non-zero exit."""


@dataclass
class Wheel:
    path: Path
    name: str  # canonical
    version: str
    requires: list[str]  # Requires-Dist lines, unevaluated
    provides_extras: list[str] = field(default_factory=list)

    @classmethod
    def read(cls, path: Path) -> "Wheel":
        name, version, _, _ = parse_wheel_filename(path.name)
        with zipfile.ZipFile(path) as zf:
            meta = next(n for n in zf.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA"))
            headers = HeaderParser().parsestr(zf.read(meta).decode("utf-8", "replace"))
        return cls(path, canonicalize_name(name), str(version), headers.get_all("Requires-Dist") or [],
                   headers.get_all("Provides-Extra") or [])

    def requirements(self, extras: set[str], env: dict) -> list[Requirement]:
        """The requirements that apply on the target with `extras` requested."""
        return applicable(self.requires, extras, env)


# --------------------------------------------------------------------------- target description


def target_environment(python: str, platforms: list[str]) -> dict:
    """PEP 508 marker values of a CPython on Linux `python` (e.g. 3.12) for the first platform."""
    parts = python.split(".")
    full = ".".join((parts + ["0", "0"])[:3])
    machine = re.sub(r"^(manylinux\d*|musllinux|linux)(_\d+_\d+)?_", "", platforms[0])
    return {"python_version": ".".join(parts[:2]), "python_full_version": full, "implementation_version": full,
            "implementation_name": "cpython", "platform_python_implementation": "CPython", "os_name": "posix",
            "sys_platform": "linux", "platform_system": "Linux", "platform_machine": machine,
            "platform_release": "", "platform_version": ""}


_LEGACY = {"manylinux1": 5, "manylinux2010": 12, "manylinux2014": 17}


def expand_platforms(platforms: list[str]) -> list[str]:
    """pip matches --platform tags literally: a glibc 2.28 target also runs wheels built for every
    older glibc, so list them all (newest first) with the legacy manylinux aliases."""
    out: list[str] = []
    for plat in platforms:
        m = re.fullmatch(r"manylinux_2_(\d+)_(\w+)", plat) or None
        legacy = re.fullmatch(r"(manylinux1|manylinux2010|manylinux2014)_(\w+)", plat)
        if m:
            glibc, arch = int(m.group(1)), m.group(2)
        elif legacy:
            glibc, arch = _LEGACY[legacy.group(1)], legacy.group(2)
        else:
            out.append(plat)
            continue
        for minor in range(glibc, 4, -1):
            out.append(f"manylinux_2_{minor}_{arch}")
        out += [f"{alias}_{arch}" for alias, minor in _LEGACY.items() if minor <= glibc]
    return list(dict.fromkeys(out))


class Have:
    """What the target already has: canonical name (or pattern) -> version or None (any)."""

    def __init__(self, lines: list[str]):
        self.exact: dict[str, str | None] = {}
        self.patterns: list[str] = []
        for raw in lines:
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            name, _, version = line.partition("==")
            name = name.strip()
            if any(c in name for c in "*?["):
                self.patterns.append(name.lower())
            else:
                self.exact[canonicalize_name(name)] = version.strip() or None

    @classmethod
    def installed(cls) -> "Have":
        """Everything installed in the interpreter running this script, with its version."""
        from importlib import metadata

        return cls([f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions() if d.metadata["Name"]])

    def without(self, names: list[str]) -> "Have":
        drop = {canonicalize_name(n) for n in names}
        self.exact = {k: v for k, v in self.exact.items() if k not in drop}
        return self

    def covers(self, req: Requirement) -> tuple[bool, str | None]:
        """(the target satisfies `req` itself, a warning when it has the package in a wrong version)."""
        name = canonicalize_name(req.name)
        if name in self.exact:
            version = self.exact[name]
            if version is None or req.specifier.contains(version, prereleases=True):
                return True, None
            return False, f"the target has {name}=={version} but {req} is required: adding a wheel"
        return any(fnmatch.fnmatch(name, p) for p in self.patterns), None


def forbidden(name: str) -> bool:
    return any(fnmatch.fnmatch(name, p) for p in FORBIDDEN)


# --------------------------------------------------------------------------- downloads


class Downloader:
    def __init__(self, python: str, platforms: list[str], stage: Path, quiet: bool = True):
        self.python, self.platforms, self.stage, self.quiet = python, platforms, stage, quiet
        self.calls = 0

    def _cmd(self, dest: Path, specs: list[str]) -> list[str]:
        abi = "cp" + "".join(self.python.split(".")[:2])
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--python-version", self.python, "--implementation", "cp", "--abi", abi,
               "--disable-pip-version-check", "--progress-bar", "off", "-d", str(dest)]
        for plat in self.platforms:
            cmd += ["--platform", plat]
        return cmd + specs

    def fetch(self, specs: list[str]) -> list[Wheel]:
        """Download one wheel per spec (distinct names) into a fresh folder of the stage."""
        self.calls += 1
        dest = self.stage / f"round{self.calls:02d}"
        dest.mkdir(parents=True)
        proc = subprocess.run(self._cmd(dest, specs), capture_output=True, text=True)
        if proc.returncode != 0:
            if len(specs) > 1:  # name the requirement that has no wheel
                for spec in specs:
                    probe = self.stage / "probe"
                    shutil.rmtree(probe, ignore_errors=True)
                    probe.mkdir()
                    if subprocess.run(self._cmd(probe, [spec]), capture_output=True, text=True).returncode != 0:
                        raise WheelhouseError(self._no_wheel(spec, proc))
            raise WheelhouseError(self._no_wheel(" ".join(specs), proc))
        return [Wheel.read(p) for p in sorted(dest.glob("*.whl"))]

    def _no_wheel(self, spec: str, proc: subprocess.CompletedProcess) -> str:
        last = [l for l in (proc.stderr or proc.stdout).splitlines() if l.startswith("ERROR")]
        return (f"no binary wheel of {spec!r} for CPython {self.python} on {self.platforms[0]} (and older) "
                f"could be downloaded: {last[-1] if last else proc.stderr.strip()[-400:]}")


def build_project_wheel(dest: Path, isolation: bool) -> Wheel:
    """`pip wheel --no-deps` of a clean copy of the checkout (tracked and unignored files), so a
    stale build/ folder can never put deleted modules into the wheel."""
    with tempfile.TemporaryDirectory(prefix="slm_src_") as tmp:
        src = Path(tmp) / "src"
        files = _source_files()
        for rel in files:
            target = src / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, target)
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "--disable-pip-version-check",
               "-w", str(dest), str(src)]
        if not isolation:
            cmd.insert(4, "--no-build-isolation")
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise WheelhouseError(f"building the project wheel failed:\n{proc.stderr.strip()[-2000:]}")
    wheels = sorted(dest.glob("megatron_slm-*.whl"))
    if not wheels:
        raise WheelhouseError(f"pip wheel produced no megatron_slm wheel in {dest}")
    return Wheel.read(wheels[-1])


def _source_files() -> list[str]:
    try:
        out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                             capture_output=True, check=True).stdout.decode()
        files = [f for f in out.split("\0") if f and (REPO / f).is_file()]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: the package and setup files
        files = [str(p.relative_to(REPO)) for p in REPO.glob("megatron_slm/**/*.py")]
        files += [f for f in ("setup.py", "setup.cfg", "pyproject.toml", "README.md") if (REPO / f).is_file()]
    keep = ("megatron_slm/", "setup.py", "setup.cfg", "pyproject.toml", "README.md", "MANIFEST.in")
    return [f for f in files if f.startswith(keep) and "__pycache__" not in f]


# --------------------------------------------------------------------------- the walk


@dataclass
class Resolution:
    wheels: dict[str, Wheel] = field(default_factory=dict)  # the closure: one version per name
    extra_versions: list[Wheel] = field(default_factory=list)  # further megatron-core versions
    required_by: dict[str, set[str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def resolve(roots: list[tuple[Requirement, str]], have: Have, env: dict, fetch,
            preloaded: list[Wheel] = (), max_rounds: int = 30) -> Resolution:
    """Walk requirements from `roots` ((requirement, who needs it)), downloading what `have` lacks.

    Each round downloads every package whose accumulated specifier the current choice does not
    meet; a package's requirements are queued when it is chosen (again with new extras)."""
    res = Resolution()
    specs: dict[str, SpecifierSet] = {}
    extras: dict[str, set[str]] = {}
    expanded: dict[str, frozenset] = {}  # name -> extras whose requirements were queued
    pending = list(roots)
    for wheel in preloaded:  # already chosen, its requirements are among the roots
        res.wheels[wheel.name] = wheel
        expanded[wheel.name] = frozenset()
    for _ in range(max_rounds):
        while pending:
            req, parent = pending.pop()
            name = canonicalize_name(req.name)
            ok, warning = have.covers(req)
            if warning and warning not in res.warnings:
                res.warnings.append(warning)
            if ok:
                continue
            specs[name] = specs.get(name, SpecifierSet()) & req.specifier
            extras.setdefault(name, set()).update(req.extras)
            res.required_by.setdefault(name, set()).add(parent)
        stale = [n for n in specs if n not in res.wheels
                 or not specs[n].contains(res.wheels[n].version, prereleases=True)]
        forbidden_now = [n for n in stale if forbidden(n)]
        if forbidden_now:
            who = "; ".join(f"{n} (needed by {', '.join(sorted(res.required_by[n]))})" for n in forbidden_now)
            raise WheelhouseError(f"the wheelhouse would need {who}: torch and CUDA wheels never go into a "
                                  "wheelhouse; list what the target has in --have")
        if stale:
            for wheel in fetch([f"{n}{specs[n]}" for n in sorted(stale)]):
                old = res.wheels.get(wheel.name)
                if old is not None and old.path != wheel.path and old.path.exists():
                    old.path.unlink()
                res.wheels[wheel.name] = wheel
                expanded.pop(wheel.name, None)
        for name, wheel in res.wheels.items():
            want = frozenset(extras.get(name, set()))
            if expanded.get(name) != want:
                expanded[name] = want
                pending += [(r, wheel.name) for r in wheel.requirements(set(want), env)]
        if not pending and not stale:
            return res
    raise WheelhouseError(f"requirements did not settle after {max_rounds} rounds: {sorted(specs)}")


# --------------------------------------------------------------------------- main


def prepare_out(out: Path) -> None:
    """--out must be empty, new, or a wheelhouse made here before (then it is rebuilt)."""
    if not out.exists():
        out.mkdir(parents=True)
        return
    manifest = out / MANIFEST
    if manifest.is_file():
        return
    leftovers = [p.name for p in out.iterdir() if p.name != ".staging"]
    if leftovers:
        raise WheelhouseError(f"--out {out} is not empty and holds no {MANIFEST} (not a wheelhouse made by this "
                              f"script): {', '.join(sorted(leftovers)[:5])}; choose an empty folder")


def publish(out: Path, files: list[Path]) -> None:
    for file in listed_files(out):  # rebuilding: drop the previous build's wheels
        (out / file).unlink(missing_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)
    for f in files:
        shutil.move(str(f), out / f.name)


def mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="make_wheelhouse.sh", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python", required=True, help="target CPython version, e.g. 3.12")
    ap.add_argument("--out", required=True, type=Path, help="wheelhouse folder (new, empty, or a previous wheelhouse)")
    ap.add_argument("--platform", action="append", default=None,
                    help="target platform tag, repeatable (default manylinux_2_28_x86_64: torch 2.11 needs glibc "
                         ">= 2.28; older manylinux tags are added automatically)")
    ap.add_argument("--budget-mib", type=float, default=60.0, help="refuse a wheelhouse larger than this (default 60)")
    ap.add_argument("--have", type=Path, help="what the target has: one `name` or `name==version` a line "
                                              "(fnmatch patterns allowed); default: the GPU node of docs/gpu.md")
    ap.add_argument("--have-installed", action="store_true",
                    help="the target is like this interpreter: everything installed here counts as present")
    ap.add_argument("--need", default="", help="comma-separated packages to include even if the target has them")
    ap.add_argument("--extras", default="test", help="extras of megatron-slm to include (default test: pytest for "
                                                      "scripts/gpu_check.py)")
    ap.add_argument("--also", default=DEFAULT_ALSO, help=f"comma-separated extra packages (default {DEFAULT_ALSO})")
    ap.add_argument("--mcore-versions", default=DEFAULT_MCORE_VERSIONS,
                    help="further megatron-core versions besides the one our pin resolves to: `newest` and/or "
                         f"versions, comma-separated, '' for none (default {DEFAULT_MCORE_VERSIONS})")
    ap.add_argument("--no-build-isolation", action="store_true",
                    help="build our wheel with the setuptools installed here (no download)")
    args = ap.parse_args(argv)

    try:
        return _build(args)
    except WheelhouseError as e:
        print(f"[wheelhouse] error: {e}", file=sys.stderr)
        return 2


def _split(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _build(args) -> int:
    if not re.fullmatch(r"3\.\d+(\.\d+)?", args.python):
        raise WheelhouseError(f"--python {args.python!r} must look like 3.12")
    platforms = expand_platforms(args.platform or ["manylinux_2_28_x86_64"])
    env = target_environment(args.python, platforms)
    if args.have_installed:
        have = Have.installed()
    elif args.have:
        if not args.have.is_file():
            raise WheelhouseError(f"--have {args.have}: no such file")
        have = Have(args.have.read_text().splitlines())
    else:
        have = Have(DEFAULT_HAVE.splitlines())
    have.without(_split(args.need))
    out = args.out.resolve()
    prepare_out(out)
    stage = out / ".staging"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    try:
        return _build_into(args, out, stage, platforms, env, have)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _build_into(args, out: Path, stage: Path, platforms: list[str], env: dict, have: Have) -> int:
    print(f"[wheelhouse] target: CPython {args.python} on {platforms[0]}; budget {args.budget_mib:g} MiB")
    project = build_project_wheel(stage / "project", isolation=not args.no_build_isolation)
    extras = set(_split(args.extras))
    unknown = extras - set(project.provides_extras)
    if unknown:
        raise WheelhouseError(f"--extras {','.join(sorted(unknown))}: megatron-slm has no such extra "
                              f"(it has {', '.join(project.provides_extras)})")
    print(f"[wheelhouse] built {project.path.name}")
    fetch = Downloader(args.python, platforms, stage).fetch

    # Further megatron-core versions first: their requirements join the walk like ours.
    roots = [(r, project.name) for r in project.requirements(extras, env)]
    roots += [(Requirement(s), "--also") for s in _split(args.also)]
    extra_mcore: list[Wheel] = []
    for v in _split(args.mcore_versions):
        spec = MCORE if v == "newest" else f"{MCORE}=={v}"
        (wheel,) = fetch([spec])
        if any(w.version == wheel.version for w in extra_mcore):
            wheel.path.unlink()
            continue
        extra_mcore.append(wheel)
        roots += [(r, f"{MCORE}=={wheel.version}") for r in wheel.requirements(set(), env)]
    res = resolve(roots, have, env, fetch, preloaded=[project])
    chosen = res.wheels.get(canonicalize_name(MCORE))
    for wheel in extra_mcore:  # the walk may have chosen one of them already
        if chosen is not None and wheel.version == chosen.version:
            if wheel.path != chosen.path:
                wheel.path.unlink()
        else:
            res.extra_versions.append(wheel)
    for w in res.warnings:
        print(f"[wheelhouse] note: {w}")

    wheels = sorted([*res.wheels.values(), *res.extra_versions], key=lambda w: (w.name, Version(w.version)))
    sizes = {w.path: w.path.stat().st_size for w in wheels}
    total = sum(sizes.values())
    for w in wheels:
        print(f"  {w.name:28s} {w.version:14s} {mib(sizes[w.path]):>10s}  {w.path.name}")
    print(f"[wheelhouse] {len(wheels)} wheels, {mib(total)} (budget {args.budget_mib:g} MiB)")
    if total > args.budget_mib * 2**20:
        biggest = sorted(wheels, key=lambda w: -sizes[w.path])[:5]
        raise WheelhouseError(
            f"the wheelhouse would hold {mib(total)}, over the {args.budget_mib:g} MiB budget; nothing was written "
            f"to {out}. Largest: " + ", ".join(f"{w.name} {mib(sizes[w.path])}" for w in biggest) +
            ". Raise --budget-mib, or list packages the target already has in --have")

    mcore_versions = sorted({w.version for w in wheels if w.name == canonicalize_name(MCORE)}, key=Version)
    manifest = {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": args.python, "platforms": platforms, "budget_mib": args.budget_mib, "total_bytes": total,
        "built_on": f"{platform.node()} (Python {platform.python_version()})",
        "project": {"name": project.name, "version": project.version, "extras": sorted(extras),
                    "file": project.path.name},
        "also": _split(args.also),
        "megatron_core": {
            "project": chosen.version if chosen else None,  # what our pin resolves to for this Python
            "versions": mcore_versions,
            "newest": mcore_versions[-1] if mcore_versions else None,
            "requested": _split(args.mcore_versions),
        },
        "have": sorted(have.exact) + sorted(have.patterns),
        "wheels": [wheel_entry(w.path, w.name, w.version, w.requires, sorted(res.required_by.get(w.name, ())) or
                               (["--mcore-versions"] if w in res.extra_versions else ["(this project)"]))
                   for w in wheels],
    }
    publish(out, [w.path for w in wheels])
    write_manifest(out, manifest)
    print(f"[wheelhouse] wrote {out} ({MANIFEST}); megatron-core {', '.join(mcore_versions) or 'none'}")
    print(f"[wheelhouse] on the target: python scripts/gpu_check.py --wheelhouse {out} --out gpu_check/   "
          f"(or WHEELHOUSE={out} bash scripts/install.sh)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
