"""Output directories a tool writes: never on top of its inputs, replaced only when ours.

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
import json
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


def guard_output_dir(out: str | os.PathLike, inputs: Sequence[Optional[str | os.PathLike]] = (),
                     force: bool = False) -> None:
    """Refuse `out` when it overlaps an input, or exists and may not be replaced."""
    target = _resolved(out)
    for inp in inputs:
        if inp is None:
            continue
        how = _overlap(target, _resolved(inp))
        if how:
            raise OutputError(f"refusing to write {out}: it {how} the input {inp} (choose an output elsewhere)")
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
