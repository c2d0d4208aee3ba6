"""Step `units`: an mhubert-base-sized random HuBERT on GPU batches (soundfile loader): audio s/s in
bf16 and float32, and how many frames get the same unit in both. The step runs the worker below in
a subprocess of the installed environment (`gpu_check.py --worker units`)."""
from __future__ import annotations

import importlib.util
import json
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from gpucheck import BENCH, CORPUS_AUDIO, ENTRY
from gpucheck.environment import offline_env
from gpucheck.results import Result, StepFailed

if TYPE_CHECKING:
    from gpucheck.runner import Check


def step_units(check: Check, result: Result, deadline: float) -> None:
    out = check.out / "units"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    cmd = [check.python, ENTRY, "--worker", "units", "--out", out,
           "--units-seconds", str(check.args.units_seconds)]
    try:
        rc = check.run_cmd(result, cmd, deadline - time.time(), env=offline_env({"OMP_NUM_THREADS": "8"}),
                           tag="unit extraction").returncode
    finally:
        report = out / "units.json"
        if report.is_file():
            data = json.loads(report.read_text())
            result.figures.update(data["figures"])
            result.details["note"] = data["note"]
    if rc != 0:
        raise StepFailed(f"unit extraction exited with {rc}: {check.tail(result)}")


def _load_bench_module(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def units_worker(out: Path, seconds: float, device: str = "cuda", layer: int = 11, k: int = 500) -> None:
    """On the GPU: the CPU bench's random mhubert-base and fitted codebook (bench/extract_units.py),
    the soundfile loader, length-bucketed batches; float32 and bf16 over the same files."""
    import numpy as np
    import torch

    from megatron_slm.audio.decode_soundfile import load_audio
    from megatron_slm.audio.loader import AudioLoader
    from megatron_slm.audio.probe import probe
    from megatron_slm.audio.sources import list_audio_files
    from megatron_slm.units.extractors import HubertExtractor
    from megatron_slm.units.pipeline import UnitExtractor

    cpu_bench = _load_bench_module("extract_units")
    src = list_audio_files(CORPUS_AUDIO)
    secs = [len(load_audio(p)) / 16000 for p in src]
    files = out / "audio"
    files.mkdir()
    paths, total = [], 0.0
    while total < seconds:  # the corpus repeated under distinct names (ids are file stems)
        for p, s in zip(src, secs):
            link = files / f"r{len(paths)}_{Path(p).name}"
            link.symlink_to(Path(p).resolve())
            paths.append(str(link))
            total += s
            if total >= seconds:
                break
    t = time.perf_counter()
    centroids = cpu_bench.fitted_sklearn_kmeans(cpu_bench.mhubert_base_25hz_random(), src, layer, k) \
        .cluster_centers_.astype(np.float32)
    fit_s = time.perf_counter() - t
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    loader = AudioLoader("soundfile", device)
    items = probe(paths)[0]
    t = time.perf_counter()
    for _ in loader.batches(items):
        pass
    sync()
    decode_s = time.perf_counter() - t

    runs, units = {}, {}
    for name, dtype in (("float32", torch.float32), ("bf16", torch.bfloat16)):
        ex = UnitExtractor(HubertExtractor(cpu_bench.mhubert_base_25hz_random(), layer, device=device, dtype=dtype),
                           centroids, loader, collapse=False)
        list(ex.units_for_files(paths[:16]))  # warm-up: kernels, allocator
        sync()
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        units[name] = {r.id: np.asarray(r.units) for r in ex.units_for_files(paths)}
        sync()
        runs[name] = {"seconds": time.perf_counter() - t,
                      "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else 0.0}
        del ex
        if device == "cuda":
            torch.cuda.empty_cache()
    a, b = units["float32"], units["bf16"]
    agree = float(np.mean([np.mean(a[i] == b[i]) if a[i].size == b[i].size else 0.0 for i in a]))
    figures = {"audio s": round(total), "bf16 audio s/s": total / runs["bf16"]["seconds"],
               "float32 audio s/s": total / runs["float32"]["seconds"],
               "bf16 / float32": runs["float32"]["seconds"] / runs["bf16"]["seconds"],
               "units equal bf16 vs float32 %": 100 * agree, "decode-only audio s/s": total / decode_s,
               "peak memory GiB": max(r["peak_gib"] for r in runs.values())}
    note = (f"random mhubert-base (12 layers, 768 hidden, 25 Hz), layer {layer}, K={k} codebook fitted on its "
            f"features ({fit_s:.0f} s on CPU), {len(paths)} files, soundfile loader (DALI absent), batches of "
            f"<= {loader.max_batch_seconds:g} s; end-to-end times include decoding")
    (out / "units.json").write_text(json.dumps({"figures": figures, "note": note, "runs": runs}, indent=1))
    print(json.dumps(figures))
