"""Every benchmark by name, and the one way to read one: its folder layout, or -- for those
published on the Hugging Face hub -- a local copy of the dataset (`hf.py`)."""
from __future__ import annotations

from megatron_slm.eval.benchmarks.cross_modal import CROSS_MODAL
from megatron_slm.eval.benchmarks.salmon import SALMON
from megatron_slm.eval.benchmarks.spec import Benchmark, ItemSpec, PrepareError, ReadRequest
from megatron_slm.eval.benchmarks.storycloze import SSC, TSC
from megatron_slm.eval.benchmarks.word_shuffle import WORD_SHUFFLE
from megatron_slm.eval.benchmarks.zerospeech import SBLIMP, SWUGGY

BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (SWUGGY, SBLIMP, SSC, TSC, SALMON, CROSS_MODAL, WORD_SHUFFLE)}


def read_specs(name: str, request: ReadRequest) -> list[ItemSpec]:
    """The item specs of benchmark `name` at `request.src`."""
    bench = BENCHMARKS[name]
    if bench.read is None:
        raise PrepareError(f"{name} is built from a corpus, not read from a benchmark folder")
    if bench.hf_columns:
        from megatron_slm.eval.benchmarks.hf import is_hf_dataset, read_hf

        if is_hf_dataset(request.src):
            return read_hf(request.src, request.task or name, request.split, request.parts if name == "salmon" else None)
    return bench.read(request)
