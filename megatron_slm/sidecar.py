"""Versioned JSON sidecars (unit identity, dataset metadata): one reader for all of them."""
from __future__ import annotations

import json
import os


def read_sidecar(path: str | os.PathLike, expected_format: str, missing_hint: str) -> dict:
    """Load `path`, checking its 'format' field; errors name the file and the field."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: {missing_hint}")
    with open(path, encoding="utf-8") as f:
        meta = json.load(f)
    if meta.get("format") != expected_format:
        raise ValueError(f"{path}: field 'format' is {meta.get('format')!r}, expected {expected_format!r}")
    return meta
