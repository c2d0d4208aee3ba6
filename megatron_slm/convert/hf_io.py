"""Reading and writing Hugging Face safetensors checkpoints one tensor at a time.

`HFReader` validates a model dir up front (index, every shard present and complete) and then
hands out single tensors by reading exactly their bytes (plain reads, not a memory map: mapped
pages of every tensor touched would stay in the process's resident set), so a conversion
never holds more than the tensors it is transforming. `ShardWriter` does the reverse: it buffers
tensors until a shard is full, writes it, and ends with the HF index. `staged_output_dir`
makes an output appear under its final name only once it is complete.
"""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import save_file

from megatron_slm.convert.families import ConversionError

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"


_ST_DTYPES = {"F64": torch.float64, "F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16,
              "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
              "BOOL": torch.bool}


def _safetensors_header(path: Path) -> dict:
    """Parse the header (adding each tensor's absolute byte range as "_start") and check the
    file is as long as it says (catches truncated copies)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise ConversionError(f"{path}: truncated safetensors file ({size} bytes)")
        (n,) = struct.unpack("<Q", raw)
        if n > size - 8:
            raise ConversionError(f"{path}: truncated or corrupt safetensors header")
        try:
            header = json.loads(f.read(n))
        except ValueError:
            raise ConversionError(f"{path}: corrupt safetensors header") from None
    header.pop("__metadata__", None)
    end = max((v["data_offsets"][1] for v in header.values()), default=0)
    for meta in header.values():
        meta["_start"] = 8 + n + meta["data_offsets"][0]
    if 8 + n + end > size:
        raise ConversionError(f"{path}: truncated: {size} bytes on disk, the header needs {8 + n + end} "
                              f"(incomplete download or copy?)")
    return header


class HFReader:
    def __init__(self, hf_dir: str | Path) -> None:
        self.dir = Path(hf_dir)
        index = self.dir / INDEX_FILE
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (ValueError, KeyError) as e:
                raise ConversionError(f"{index}: unreadable index ({e})") from None
            files = sorted(set(weight_map.values()))
        elif (self.dir / SINGLE_FILE).is_file():
            files, weight_map = [SINGLE_FILE], None
        else:
            bins = sorted(p.name for p in self.dir.glob("*.bin"))
            hint = f" (found {', '.join(bins[:3])}: re-save it with safe_serialization=True)" if bins else ""
            raise ConversionError(f"{self.dir}: no {SINGLE_FILE} or {INDEX_FILE}{hint}")
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.nbytes: dict[str, int] = {}
        self.file_of: dict[str, str] = {}
        self._meta: dict[str, dict] = {}
        for name in files:
            path = self.dir / name
            if not path.is_file():
                raise ConversionError(f"{index}: lists shard {name}, which is missing from {self.dir}")
            for tensor, meta in _safetensors_header(path).items():
                self.file_of[tensor] = name
                self._meta[tensor] = meta
                self.shapes[tensor] = tuple(meta["shape"])
                start, end = meta["data_offsets"]
                self.nbytes[tensor] = end - start
        if weight_map is not None:
            for tensor, name in weight_map.items():
                if self.file_of.get(tensor) != name:
                    raise ConversionError(f"{index}: tensor {tensor} should be in {name} but is not there")

    def __contains__(self, name: str) -> bool:
        return name in self.file_of

    def get(self, name: str) -> torch.Tensor:
        if name not in self.file_of:
            raise ConversionError(f"{self.dir}: the checkpoint has no tensor {name!r}")
        meta = self._meta[name]
        if meta["dtype"] not in _ST_DTYPES:
            raise ConversionError(f"{self.dir / self.file_of[name]}: tensor {name} has unsupported dtype {meta['dtype']}")
        buf = bytearray(self.nbytes[name])
        with open(self.dir / self.file_of[name], "rb") as f:
            f.seek(meta["_start"])
            if f.readinto(buf) != len(buf):
                raise ConversionError(f"{self.dir / self.file_of[name]}: truncated while reading {name}")
        if not buf:
            return torch.empty(meta["shape"], dtype=_ST_DTYPES[meta["dtype"]])
        return torch.frombuffer(buf, dtype=_ST_DTYPES[meta["dtype"]]).reshape(meta["shape"])

    def read_rows_into(self, name: str, dest: torch.Tensor) -> bool:
        """Read the first dest.shape[0] rows of a 2-D tensor straight into `dest` (same dtype
        and width), so a big embedding is never held twice. False when it does not apply."""
        meta = self._meta[name]
        if _ST_DTYPES.get(meta["dtype"]) != dest.dtype or list(dest.shape[1:]) != meta["shape"][1:] \
                or dest.shape[0] > meta["shape"][0] or not dest.is_contiguous():
            return False
        view = memoryview(dest.view(torch.uint8).numpy()).cast("B")
        with open(self.dir / self.file_of[name], "rb") as f:
            f.seek(meta["_start"])
            if f.readinto(view) != len(view):
                raise ConversionError(f"{self.dir / self.file_of[name]}: truncated while reading {name}")
        return True

    def dtype_name(self) -> Optional[str]:
        """The floating dtype most tensors are stored in (e.g. 'bfloat16')."""
        header = _safetensors_header(self.dir / next(iter(self.file_of.values())))
        names = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}
        for meta in header.values():
            if meta["dtype"] in names:
                return names[meta["dtype"]]
        return None


class ShardWriter:
    """Collect tensors into safetensors shards of at most `max_shard_bytes` and write the index."""

    def __init__(self, out_dir: Path, max_shard_bytes: int) -> None:
        self.out_dir, self.max_bytes = out_dir, max_shard_bytes
        self._pending: dict[str, torch.Tensor] = {}
        self._pending_bytes = 0
        self._shards: list[list[str]] = []
        self.total_bytes = 0

    def add(self, name: str, tensor: torch.Tensor) -> None:
        size = tensor.numel() * tensor.element_size()
        if self._pending and self._pending_bytes + size > self.max_bytes:
            self._flush()
        self._pending[name] = tensor.contiguous()
        self._pending_bytes += size
        self.total_bytes += size

    def _flush(self) -> None:
        tmp = self.out_dir / f"shard-{len(self._shards):05d}.tmp"
        save_file(self._pending, str(tmp), metadata={"format": "pt"})
        self._shards.append(list(self._pending))
        self._pending, self._pending_bytes = {}, 0

    def close(self) -> int:
        """Write the last shard, give shards their HF names, write the index; returns #shards."""
        if self._pending:
            self._flush()
        n = len(self._shards)
        if n == 1:
            os.replace(self.out_dir / "shard-00000.tmp", self.out_dir / SINGLE_FILE)
            return 1
        weight_map = {}
        for k, names in enumerate(self._shards):
            final = f"model-{k + 1:05d}-of-{n:05d}.safetensors"
            os.replace(self.out_dir / f"shard-{k:05d}.tmp", self.out_dir / final)
            weight_map.update({name: final for name in names})
        index = {"metadata": {"total_size": self.total_bytes}, "weight_map": dict(sorted(weight_map.items()))}
        (self.out_dir / INDEX_FILE).write_text(json.dumps(index, indent=2))
        return n


def check_output(out: str | Path, force: bool, inputs: tuple) -> None:
    from megatron_slm.outputs import OutputError, guard_output_dir

    try:
        guard_output_dir(out, inputs, force)
    except OutputError as e:
        raise ConversionError(str(e)) from None


def staged_output_dir(out: str | Path, force: bool = False, inputs: tuple = (), tool: str = "convert"):
    """The converter's output directory, staged and guarded (megatron_slm/outputs.py): a crash or
    an error leaves no directory named `out`, and `out` may not overlap an input."""
    from megatron_slm.outputs import staged_dir

    return staged_dir(out, inputs=inputs, force=force, tool=tool, error=ConversionError)
