"""Writing Megatron indexed datasets (.bin/.idx) with numpy only.

Megatron-Core's `IndexedDatasetBuilder` writes this format but importing it pulls in torch and
megatron-core (seconds per process), which preprocessing does not otherwise need. The bytes are
the same (a test compares them with Megatron's builder):

  .bin   the ids of every sequence back to back, in the dataset's dtype
  .idx   b"MMIDIDX\\x00\\x00", uint64 version 1, uint8 dtype code, uint64 sequence count,
         uint64 document-index count, int32 sequence lengths, int64 sequence byte offsets,
         int64 document indices ([0, then the sequence count after each document])

Here every document is one sequence (what GPTDataset packs), and no sequence modes are written.

    w = IndexedWriter("out.bin", np.uint16)
    w.add_document(ids)                  # or w.add_index("shard_000001") to append a dataset
    w.finalize("out.idx")
"""
from __future__ import annotations

import shutil
import struct

import numpy as np

HEADER = b"MMIDIDX\x00\x00"
VERSION = 1
# Megatron's DType codes
DTYPE_CODES = {np.dtype(np.uint8): 1, np.dtype(np.int8): 2, np.dtype(np.int16): 3, np.dtype(np.int32): 4,
               np.dtype(np.int64): 5, np.dtype(np.float64): 6, np.dtype(np.float32): 7, np.dtype(np.uint16): 8}
_PREAMBLE = len(HEADER) + 8 + 1


class IndexedWriter:
    """A .bin written as documents (or whole datasets) are added; the .idx on `finalize`."""

    def __init__(self, bin_path: str, dtype) -> None:
        self.dtype = np.dtype(dtype)
        if self.dtype not in DTYPE_CODES:
            raise ValueError(f"{bin_path}: dtype {self.dtype} is not one of Megatron's indexed-dataset dtypes")
        self.data = open(bin_path, "wb")
        self.lengths: list[np.ndarray] = []      # int32 sequence lengths, in chunks
        self.doc_ends: list[np.ndarray] = []     # int64 document ends (sequence counts), in chunks
        self.count = 0                           # sequences so far

    def add_document(self, ids) -> None:
        """One document of one sequence."""
        a = np.asarray(ids).astype(self.dtype, copy=False)
        self.data.write(a.tobytes(order="C"))
        self.count += 1
        self.lengths.append(np.array([a.size], dtype=np.int32))
        self.doc_ends.append(np.array([self.count], dtype=np.int64))

    def add_index(self, prefix: str) -> None:
        """Append the dataset `prefix` (.bin/.idx of the same dtype)."""
        dtype, lengths, doc_indices = read_index(prefix + ".idx")
        if dtype != self.dtype:
            raise ValueError(f"{prefix}.idx holds {dtype} ids, this dataset {self.dtype}")
        self.lengths.append(lengths)
        self.doc_ends.append(doc_indices[1:] + self.count)
        self.count += len(lengths)
        with open(prefix + ".bin", "rb") as f:
            shutil.copyfileobj(f, self.data)

    def finalize(self, idx_path: str) -> None:
        self.data.close()
        lengths = np.concatenate(self.lengths) if self.lengths else np.zeros(0, np.int32)
        doc_indices = np.concatenate([np.zeros(1, np.int64)] + self.doc_ends)
        pointers = np.zeros(len(lengths), dtype=np.int64)
        np.cumsum(lengths[:-1].astype(np.int64) * self.dtype.itemsize, out=pointers[1:])
        with open(idx_path, "wb") as f:
            f.write(HEADER + struct.pack("<Q", VERSION) + struct.pack("<B", DTYPE_CODES[self.dtype]))
            f.write(struct.pack("<Q", len(lengths)) + struct.pack("<Q", len(doc_indices)))
            f.write(lengths.astype(np.int32).tobytes(order="C"))
            f.write(pointers.tobytes(order="C"))
            f.write(doc_indices.tobytes(order="C"))


def read_index(idx_path: str) -> tuple[np.dtype, np.ndarray, np.ndarray]:
    """(dtype, int32 sequence lengths, int64 document indices) of an .idx file."""
    with open(idx_path, "rb") as f:
        raw = f.read()
    if raw[:len(HEADER)] != HEADER or struct.unpack_from("<Q", raw, len(HEADER))[0] != VERSION:
        raise ValueError(f"{idx_path}: not a Megatron indexed-dataset index (version {VERSION})")
    code = raw[len(HEADER) + 8]
    dtype = next((d for d, c in DTYPE_CODES.items() if c == code), None)
    if dtype is None:
        raise ValueError(f"{idx_path}: unknown dtype code {code}")
    n_seq, n_doc = struct.unpack_from("<QQ", raw, _PREAMBLE)
    at = _PREAMBLE + 16
    lengths = np.frombuffer(raw, dtype=np.int32, count=n_seq, offset=at)
    doc_indices = np.frombuffer(raw, dtype=np.int64, count=n_doc, offset=at + 12 * n_seq)
    return dtype, lengths.copy(), doc_indices.copy()
