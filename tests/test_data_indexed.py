"""The numpy .bin/.idx writer against Megatron-Core's IndexedDatasetBuilder, byte for byte, and
preprocessing that imports neither torch nor Megatron-Core."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from megatron_slm.data.indexed import IndexedWriter, read_index

from conftest import CORPUS, REPO, TOKENIZER


@pytest.mark.parametrize("dtype", [np.uint16, np.int32])
def test_writer_bytes_equal_megatron_builder(tmp_path, dtype):
    from megatron.core.datasets.indexed_dataset import IndexedDataset, IndexedDatasetBuilder

    rng = np.random.default_rng(3)
    shards = [[rng.integers(0, 60000, size=int(n)) for n in rng.integers(0, 40, size=k)] for k in (5, 0, 17)]
    for name, Builder in (("ours", IndexedWriter), ("megatron", IndexedDatasetBuilder)):
        for s, docs in enumerate(shards):  # shards as preprocessing writes them, then merged
            b = Builder(str(tmp_path / f"{name}_{s}.bin"), dtype=dtype)
            for d in docs:
                b.add_document(d) if Builder is IndexedWriter else b.add_document(d, [len(d)])
            b.finalize(str(tmp_path / f"{name}_{s}.idx"))
        merged = Builder(str(tmp_path / f"{name}.bin"), dtype=dtype)
        for s in range(len(shards)):
            merged.add_index(str(tmp_path / f"{name}_{s}"))
        merged.finalize(str(tmp_path / f"{name}.idx"))
    for suffix in ["_0.bin", "_0.idx", "_1.bin", "_1.idx", ".bin", ".idx"]:
        assert (tmp_path / f"ours{suffix}").read_bytes() == (tmp_path / f"megatron{suffix}").read_bytes(), suffix
    docs = [d for shard in shards for d in shard]
    ds = IndexedDataset(str(tmp_path / "ours"))
    assert len(ds) == len(docs) and all(np.array_equal(ds[i], d.astype(dtype)) for i, d in enumerate(docs))
    got_dtype, lengths, doc_indices = read_index(str(tmp_path / "ours.idx"))
    assert got_dtype == np.dtype(dtype) and lengths.tolist() == [len(d) for d in docs]
    assert doc_indices.tolist() == list(range(len(docs) + 1))


def test_writer_refuses_a_shard_of_another_dtype(tmp_path):
    w = IndexedWriter(str(tmp_path / "a.bin"), np.int32)
    w.add_document([1, 2])
    w.finalize(str(tmp_path / "a.idx"))
    with pytest.raises(ValueError, match="holds int32 ids"):
        IndexedWriter(str(tmp_path / "b.bin"), np.uint16).add_index(str(tmp_path / "a"))
    (tmp_path / "bad.idx").write_bytes(b"not an index")
    with pytest.raises(ValueError, match="bad.idx: not a Megatron"):
        read_index(str(tmp_path / "bad.idx"))


# runs tools/preprocess_data.py in a fresh interpreter, then names the heavy modules it imported
_RUN_TOOL = """
import json, runpy, sys
for argv in json.loads(sys.argv[1]):
    sys.argv = ["tools/preprocess_data.py"] + argv
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
    except SystemExit as e:
        assert not e.code, e.code
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & {"torch", "megatron", "numpy"})))
"""


def _run_tool(argvs: list, cwd: Path) -> list:
    proc = subprocess.run([sys.executable, "-c", _RUN_TOOL, json.dumps(argvs)], cwd=cwd, capture_output=True,
                          text=True, timeout=600, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_preprocessing_imports_neither_torch_nor_megatron_and_gives_the_golden_files(tmp_path):
    corpus = CORPUS
    golden = json.loads((REPO / "tests" / "golden" / "data.json").read_text())["datasets"]
    argvs = [["interleaved", "--tokenizer", str(TOKENIZER), "--quiet",
              "--units", str(corpus / "units.jsonl"), "--alignments", str(corpus / "alignments.jsonl"),
              "--mode", mode, "--out-prefix", str(tmp_path / mode)] for mode in ("static", "dynamic")]
    assert _run_tool(argvs, REPO) == ["numpy"]
    for mode in ("static", "dynamic"):
        want = golden[f"interleaved_{mode}_slamkit"]
        for suffix in [".bin", ".idx"] + (["_words.bin", "_words.idx"] if mode == "dynamic" else []):
            got = hashlib.sha256((tmp_path / f"{mode}{suffix}").read_bytes()).hexdigest()
            assert got == want[suffix], (mode, suffix)


def test_preprocess_help_imports_nothing_heavy():
    """--help answers from argparse alone (well under 0.25 s on a quiet machine); the K it names is the vocabulary's."""
    from megatron_slm.commands import preprocess_data
    from megatron_slm.vocab import DEFAULT_NUM_UNITS

    assert preprocess_data.SIMS_NUM_UNITS == DEFAULT_NUM_UNITS
    proc = subprocess.run([sys.executable, "-X", "importtime", str(REPO / "tools" / "preprocess_data.py"), "interleaved",
                           "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "--num-units" in proc.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
    assert not imported & {"numpy", "torch", "transformers", "megatron.core"}, imported & {"numpy", "torch"}
