"""Outputs a tool writes: never on top of its inputs, replaced only when ours.

    guard_output_file(args.out, inputs=[args.items, args.model_dir], force=args.force, flag="--out")
    guard_reused_dir(args.out, tool="scaling plan")   # a directory written in place (resumable builds)
    name = output_name(row_id)                          # a file name per id, unique across ids
    with staged_dir(args.out, inputs=[args.hf_dir, args.tokenizer], force=args.force, tool="hf-to-mcore") as tmp:
        ...write into tmp...          # becomes args.out only when the block finishes

Rules, for every tool that writes a directory:
  * the output is never equal to, inside, or a parent of an input (a `--force` there would delete
    what it reads);
  * an existing output is replaced only with `--force`, and only when it is a directory a
    megatron-slm tool wrote: each carries a marker file naming the tool and when it wrote it;
  * the new contents are written beside it and renamed into place, so a crash never leaves a
    half-written directory under the output's name.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import re
import os
import shutil
import time
from pathlib import Path
from typing import Iterator, Optional, Sequence

MARKER = ".megatron-slm-output"


class OutputError(ValueError):
    """A refused output path; the message names it and why."""


def _resolved(path: str | os.PathLike) -> Path:
    return Path(path).expanduser().resolve()


def _overlap(out: Path, inp: Path) -> Optional[str]:
    if out == inp:
        return "is"
    if out in inp.parents:
        return "contains"
    if inp in out.parents:
        return "is inside"
    return None


def is_ours(directory: str | os.PathLike) -> bool:
    return (Path(directory) / MARKER).is_file()


def _refuse_overlap(out, inputs: Sequence[Optional[str | os.PathLike]], label: str) -> Path:
    """The resolved output path; OutputError when it is, holds or lies inside an input."""
    target = _resolved(out)
    for inp in inputs:
        if inp is None:
            continue
        how = _overlap(target, _resolved(inp))
        if how:
            raise OutputError(f"refusing to write {label}{out}: it {how} the input {inp} (choose an output elsewhere)")
    return target


def guard_output_dir(out: str | os.PathLike, inputs: Sequence[Optional[str | os.PathLike]] = (),
                     force: bool = False) -> None:
    """Refuse `out` when it overlaps an input, or exists and may not be replaced."""
    target = _refuse_overlap(out, inputs, "")
    if target.exists():
        if not target.is_dir():
            raise OutputError(f"{out} exists and is not a directory")
        if not force:
            raise OutputError(f"{out} already exists (pass --force to replace it)")
        if any(target.iterdir()) and not is_ours(target):
            raise OutputError(f"{out} exists and was not written by a megatron-slm tool (no {MARKER} file): "
                              f"--force replaces only such directories; remove it yourself if it is disposable")


def mark(directory: str | os.PathLike, tool: str) -> None:
    (Path(directory) / MARKER).write_text(json.dumps(
        {"tool": tool, "written_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "pid": os.getpid()}) + "\n")


@contextlib.contextmanager
def staged_dir(out: str | os.PathLike, inputs: Sequence[Optional[str | os.PathLike]] = (), force: bool = False,
               tool: str = "megatron-slm", error: type[Exception] = OutputError) -> Iterator[Path]:
    """Yield a sibling temp dir that becomes `out` (marked as ours) only if the block finishes.
    `error`: the exception type refusals are raised as (a tool's own error class)."""
    try:
        guard_output_dir(out, inputs, force)
    except OutputError as e:
        raise error(str(e)) from None
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        mark(tmp, tool)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)  # the previous output stays whole until the new one is in place
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def guard_output_file(out: str | os.PathLike, inputs: Sequence[Optional[str | os.PathLike]] = (),
                      force: bool = False, flag: str = "--out", resume: bool = False) -> None:
    """Refuse a file output that is an input, lies inside an input directory (a model directory),
    is a directory, has a file where a parent directory should be, or exists without `force`
    (`resume`: the tool appends to it, so it may exist)."""
    target = _refuse_overlap(out, inputs, flag + " ")
    if target.is_dir():
        raise OutputError(f"{flag} {out} is a directory; give the path of a file to write")
    for parent in target.parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputError(f"{flag} {out}: {parent} is a file, not a directory")
            break
    if target.exists() and not (force or resume):
        raise OutputError(f"{flag} {out} already exists (pass --force to replace it)")


def guard_distinct(outputs: dict[str, Optional[str | os.PathLike]]) -> None:
    """Two outputs of one command (flag -> path) must not be the same file."""
    seen: dict[Path, str] = {}
    for flag, path in outputs.items():
        if path is None:
            continue
        target = _resolved(path)
        if target in seen:
            raise OutputError(f"{flag} and {seen[target]} name the same file {path}")
        seen[target] = flag


def guard_reused_dir(out: str | os.PathLike, tool: str, inputs: Sequence[Optional[str | os.PathLike]] = (),
                     flag: str = "--out", own_file: Optional[str] = None) -> None:
    """A directory a tool builds in place and reuses on the next run: refused when it overlaps an
    input, or already holds files without a megatron-slm marker (someone else's files, which a
    build would mix with or overwrite). `own_file`: a file name (the tool's manifest) that marks the
    directories it wrote before markers existed. Marks it as ours before anything is written."""
    target = _refuse_overlap(out, inputs, flag + " ")
    if target.exists():
        if not target.is_dir():
            raise OutputError(f"{flag} {out} exists and is not a directory")
        if any(target.iterdir()) and not is_ours(target) and not (own_file and (target / own_file).is_file()):
            raise OutputError(f"{flag} {out} holds files no megatron-slm tool wrote (no {MARKER} file): "
                              f"choose an empty or new directory")
    target.mkdir(parents=True, exist_ok=True)
    if not is_ours(target):
        mark(target, tool)


def output_name(uid: str) -> str:
    """A file-name stem for an id, distinct for distinct ids: an id that is already a safe name is
    kept; any other gets its safe form plus a hash of the id (`a/b` and `a_b` would otherwise meet)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", uid).strip("_.")[:100]
    if safe == uid and safe:
        return safe
    return f"{safe or 'id'}-{hashlib.sha1(uid.encode('utf-8', 'surrogatepass')).hexdigest()[:10]}"
