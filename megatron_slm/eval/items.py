"""The scored-item file: one JSONL per benchmark, what every preparer writes and the scorer reads.

Line 1 is a header, every other line one item:

    {"format": "megatron-slm-eval-items", "version": 1, "task": "ssc", "unit_identity": {...} | null}
    {"id": "1234", "task": "ssc", "part": null,
     "positive": {"units": [12, 7, ...]},
     "negatives": [{"units": [12, 9, ...]}],
     "prompt": null, "meta": {"positive_text": "...", ...}}

A candidate carries `units` (unit indices 0..K-1, consecutive duplicates already collapsed)
and/or `text`. Cross-modal items add a `prompt` candidate: it conditions every candidate and
is never scored itself. `unit_identity` is the units extractor's identity (name, layer, k,
centroid hash ...): scoring refuses items whose identity differs from the model vocabulary's
(megatron_slm/unit_identity.py), since unit ids from another k-means are meaningless to the model.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

from megatron_slm import fields
from megatron_slm.jsonio import iter_jsonl

FORMAT = "megatron-slm-eval-items"
VERSION = 1


class ItemError(ValueError):
    """Bad benchmark data; the message names the file, line and field."""


@dataclass
class Candidate:
    units: Optional[list[int]] = None
    text: Optional[str] = None

    def to_json(self) -> dict:
        out: dict[str, Any] = {}
        if self.units is not None:
            out["units"] = [int(u) for u in self.units]
        if self.text is not None:
            out["text"] = self.text
        return out

    @classmethod
    def from_json(cls, obj: Any, where: str, name: str) -> "Candidate":
        if not isinstance(obj, dict):
            raise ItemError(f"{where}: field {name!r} must be an object with 'units' and/or 'text'")
        units, text = obj.get("units"), obj.get("text")
        if units is None and text is None:
            raise ItemError(f"{where}: field {name!r} has neither 'units' nor 'text'")
        try:  # the readers' shared field rules: unit ids are ints (not 3.7, "7" or true), never converted
            if units is not None:
                fields.integers(units, where, f"{name}.units", lo=0, empty=False)
            if text is not None:
                fields.string(text, where, f"{name}.text")
        except fields.FieldError as e:
            raise ItemError(str(e)) from None
        return cls(units=units, text=text)


@dataclass
class Item:
    id: str
    task: str
    positive: Candidate
    negatives: list[Candidate]
    part: Optional[str] = None
    prompt: Optional[Candidate] = None
    meta: dict = field(default_factory=dict)
    where: Optional[str] = field(default=None, compare=False)  # "file:line" it was read from, for messages

    def to_json(self) -> dict:
        return {"id": self.id, "task": self.task, "part": self.part,
                "positive": self.positive.to_json(),
                "negatives": [n.to_json() for n in self.negatives],
                "prompt": self.prompt.to_json() if self.prompt else None,
                "meta": self.meta}

    @classmethod
    def from_json(cls, obj: Any, where: str) -> "Item":
        if not isinstance(obj, dict):
            raise ItemError(f"{where}: an item must be a JSON object")
        for key in ("id", "task", "positive", "negatives"):
            if key not in obj:
                raise ItemError(f"{where}: missing field {key!r}")
        try:
            fields.string(obj["id"], where, "id")
            fields.string(obj["task"], where, "task")
            if obj.get("part") is not None:
                fields.string(obj["part"], where, "part")
        except fields.FieldError as e:
            raise ItemError(str(e)) from None
        negs = obj["negatives"]
        if not isinstance(negs, list) or not negs:
            raise ItemError(f"{where}: field 'negatives' needs at least one candidate")
        meta = obj.get("meta")
        if meta is not None and not isinstance(meta, dict):
            raise ItemError(f"{where}: field 'meta' must be an object or null, not {type(meta).__name__}")
        prompt = obj.get("prompt")
        return cls(id=obj["id"], task=obj["task"], part=obj.get("part"),
                   positive=Candidate.from_json(obj["positive"], where, "positive"),
                   negatives=[Candidate.from_json(n, where, f"negatives[{i}]") for i, n in enumerate(negs)],
                   prompt=Candidate.from_json(prompt, where, "prompt") if prompt is not None else None,
                   meta=meta if meta is not None else {}, where=where)

    def candidates(self) -> list[Candidate]:
        return [self.positive, *self.negatives]


@dataclass
class ItemSet:
    task: str
    items: list[Item]
    unit_identity: Optional[dict] = None
    path: Optional[str] = None


def write_items(path: str | os.PathLike, task: str, items: Iterable[Item],
                unit_identity: Optional[dict]) -> int:
    """Write header + items atomically (a partial file never looks complete). Returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    seen: set[str] = set()
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps({"format": FORMAT, "version": VERSION, "task": task,
                            "unit_identity": unit_identity}) + "\n")
        for item in items:
            if item.id in seen:
                raise ItemError(f"{path}: duplicate item id {item.id!r}")
            seen.add(item.id)
            f.write(json.dumps(item.to_json(), ensure_ascii=False) + "\n")
            n += 1
    os.replace(tmp, path)
    return n


def read_items(path: str | os.PathLike) -> ItemSet:
    path = Path(path)
    if not path.is_file():
        raise ItemError(f"{path}: benchmark item file not found (make it with tools/prepare_eval_data.py)")
    items: list[Item] = []
    header: Optional[dict] = None
    seen: set[str] = set()
    for where, obj in iter_jsonl(path, error=ItemError):
        if header is None:
            if not isinstance(obj, dict) or obj.get("format") != FORMAT:
                raise ItemError(f"{where}: first line must be the header with \"format\": \"{FORMAT}\"")
            if obj.get("version") != VERSION:
                raise ItemError(f"{where}: unsupported version {obj.get('version')!r} (this code reads {VERSION})")
            header = obj
            continue
        item = Item.from_json(obj, where)
        if item.id in seen:
            raise ItemError(f"{where}: duplicate item id {item.id!r}")
        seen.add(item.id)
        items.append(item)
    if header is None:
        raise ItemError(f"{path}: empty file (no header)")
    if not items:
        raise ItemError(f"{path}: no items after the header")
    return ItemSet(task=str(header["task"]), items=items, unit_identity=header.get("unit_identity"),
                   path=str(path))
