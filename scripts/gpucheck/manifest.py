"""The wheelhouse manifest, manifest.json beside the wheels: scripts/wheelhouse.py writes it, the GPU
check reads and verifies it. Its fields (format 1):

  python, platforms       the target the wheels are for
  project                 {name, version, extras, file}: this project's wheel
  also                    further packages installed with it (e.g. soundfile)
  megatron_core           {project: what our pin resolves to, versions, newest, requested}
  wheels                  [{file, name, version, bytes, sha256, requires (Requires-Dist), required_by}]
  have, budget_mib, total_bytes, created, built_on   how it was made

Only the standard library and `packaging` (or the copy pip vendors) are needed: both sides run on
an interpreter where nothing else may be installed yet.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Optional

# The one place either side takes `packaging` from (SpecifierSet and Version: for scripts/wheelhouse.py).
try:
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet  # noqa: F401
    from packaging.tags import sys_tags
    from packaging.utils import canonicalize_name, parse_wheel_filename
    from packaging.version import Version  # noqa: F401
except ImportError:  # a bare interpreter: pip vendors the same library
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.specifiers import SpecifierSet  # noqa: F401
    from pip._vendor.packaging.tags import sys_tags
    from pip._vendor.packaging.utils import canonicalize_name, parse_wheel_filename
    from pip._vendor.packaging.version import Version  # noqa: F401

MANIFEST = "manifest.json"
FORMAT = 1


class ManifestError(RuntimeError):
    """A missing, damaged or incomplete wheelhouse: one line for the user."""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def applicable(requires: list[str], extras: set[str], env: Optional[dict] = None) -> list[Requirement]:
    """The Requires-Dist lines that apply with `extras` requested, on a target whose PEP 508 marker
    values are `env` (None: this interpreter)."""
    out = []
    for line in requires:
        req = Requirement(line)
        if req.marker is None or any(req.marker.evaluate({**(env or {}), "extra": e}) for e in ("", *sorted(extras))):
            out.append(req)
    return out


def wheel_entry(path: Path, name: str, version: str, requires: list[str], required_by: list[str]) -> dict:
    """One wheel's record in the manifest."""
    return {"file": path.name, "name": name, "version": version, "bytes": path.stat().st_size,
            "sha256": sha256(path), "requires": requires, "required_by": required_by}


def write_manifest(out: Path, manifest: dict) -> None:
    (out / MANIFEST).write_text(json.dumps({"format": FORMAT, **manifest}, indent=1) + "\n")


def listed_files(out: Path) -> list[str]:
    """The wheel files a wheelhouse's manifest lists ([] when there is none)."""
    manifest = out / MANIFEST
    return [e["file"] for e in json.loads(manifest.read_text()).get("wheels", [])] if manifest.is_file() else []


class Wheelhouse:
    """A folder made by scripts/make_wheelhouse.sh: wheels + manifest.json."""

    def __init__(self, path: Path):
        self.path = path.resolve()
        manifest = self.path / MANIFEST
        if not self.path.is_dir():
            raise ManifestError(f"--wheelhouse {path}: no such folder (make one with scripts/make_wheelhouse.sh)")
        if not manifest.is_file():
            raise ManifestError(f"--wheelhouse {path}: no {MANIFEST}: not a complete wheelhouse from "
                                "scripts/make_wheelhouse.sh")
        try:
            self.manifest = json.loads(manifest.read_text())
            self.wheels = self.manifest["wheels"]
            self.project = self.manifest["project"]
            self.mcore = self.manifest["megatron_core"]
        except (ValueError, KeyError) as e:
            raise ManifestError(f"{manifest}: not a wheelhouse manifest ({e})") from None
        if self.manifest.get("format") != FORMAT:
            raise ManifestError(f"{manifest}: format {self.manifest.get('format')}, this checkout reads format "
                                f"{FORMAT}: make the wheelhouse again with this checkout")

    def verify(self) -> None:
        """Every listed wheel is there with its recorded sha256 (a copy to the node can truncate)."""
        for entry in self.wheels:
            f = self.path / entry["file"]
            if not f.is_file():
                raise ManifestError(f"{self.path / MANIFEST}: wheel {entry['file']} is missing from the wheelhouse")
            if sha256(f) != entry["sha256"]:
                raise ManifestError(f"{f}: sha256 differs from {MANIFEST} (a damaged copy?); copy the wheelhouse again")

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
                raise ManifestError(f"--mcore {requested}: the wheelhouse holds megatron-core "
                                    f"{', '.join(versions) or 'none'}")
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
        supported = set(sys_tags())
        fit, unfit = [], []
        for w in self.wheels:
            tags = parse_wheel_filename(w["file"])[3]
            (fit if tags & supported else unfit).append(w["file"])
        return {"fit": fit, "unfit": unfit}

    def foreign_requirements(self, specs: list[str]) -> list[dict]:
        """Requirements of the wheels that would be installed on packages the wheelhouse lacks,
        checked against this interpreter's installed versions (what the node must provide itself)."""
        from importlib import metadata

        inside = {w["name"] for w in self.wheels}
        by_name = {w["name"]: w for w in self.wheels}
        seen, out, queue = set(), {}, [Requirement(s) for s in specs]
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
                queue += applicable(entry["requires"], set(req.extras))
                continue
            try:
                have = metadata.version(req.name)
            except metadata.PackageNotFoundError:
                have = None
            ok = have is not None and req.specifier.contains(have, prereleases=True)
            out[(name, str(req.specifier))] = {"requirement": f"{name}{req.specifier}", "installed": have, "ok": ok}
        return sorted(out.values(), key=lambda d: d["requirement"])
