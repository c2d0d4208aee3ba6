"""JSON files shared across the pipeline: JSONL record streams and versioned sidecars."""
from __future__ import annotations

import json
import os
from typing import Any, Iterator

try:  # 2-3x faster than json on unit/alignment records; same results, JSONDecodeError subclass
    from orjson import loads
except ImportError:  # pragma: no cover - orjson is a dependency, the fallback keeps tools usable
    from json import loads


def iter_jsonl(path: str | os.PathLike, error: type[Exception] = ValueError,
               tolerate_truncated_tail: bool = False) -> Iterator[tuple[str, Any]]:
    """(`file:line`, object) for each non-blank line; a bad line raises `error` naming file:line.

    With `tolerate_truncated_tail`, an unparsable *last* line without a newline (a writer killed
    mid-line) ends the stream instead: what resuming an interrupted run needs.
    """
    with open(path, "rb") as f:
        lines = f.readlines()
    for lineno, raw in enumerate(lines, 1):
        cut_short = tolerate_truncated_tail and lineno == len(lines) and not raw.endswith(b"\n")
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            if cut_short:  # killed in the middle of a multi-byte character
                return
            raise error(f"{path}:{lineno}: not UTF-8 (byte {e.start})") from None
        if not line.strip():
            continue
        try:
            obj = loads(line)
        except json.JSONDecodeError as e:
            if cut_short:
                return
            raise error(f"{path}:{lineno}: not JSON ({e.msg})") from None
        yield f"{path}:{lineno}", obj


def read_sidecar(path: str | os.PathLike, expected_format: str, missing_hint: str) -> dict:
    """Load `path`, checking its 'format' field; errors name the file and the field."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: {missing_hint}")
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:  # a truncated or overwritten sidecar
        raise ValueError(f"{path}: not a readable JSON sidecar ({e})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: expected a JSON object, found {type(meta).__name__}")
    if meta.get("format") != expected_format:
        raise ValueError(f"{path}: field 'format' is {meta.get('format')!r}, expected {expected_format!r}")
    return meta


def atomic_write(path: str | os.PathLike, text: str) -> None:
    """Replace `path` with `text` so a reader sees the old file or the new one, never a part."""
    tmp = f"{os.fspath(path)}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
