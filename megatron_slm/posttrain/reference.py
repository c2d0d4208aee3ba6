"""The DPO reference: the starting checkpoint's log-probabilities of every stored completion.

    ref = ensure_reference(trainer, data)     # [records, 2] float64: log p(chosen), log p(rejected)

Computed once, before the first step, by the run's own model (still holding the starting
weights) at the run's TP/PP/DP, through the same scoring path as evaluation
(eval.likelihood.MegatronBackend: forward-only pipeline schedule, softmax over the real vocabulary).
A DPO step then needs one policy forward/backward per sequence and no second model in memory.

Stored under <run dir>/reference/<key>.npz, the key hashing the reference's identity (the sha256
of the starting checkpoint's files), the datasets' content hashes, seq_length and the vocabulary:
a changed reference or dataset computes a new file. A resumed run (whose model is no longer the
reference) checks that its starting checkpoint is still the one recorded in
<run dir>/reference/reference.json and refuses otherwise.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Optional

import numpy as np

from megatron_slm.config import ConfigError, SLMConfig
from megatron_slm.data.storage import content_hash, write_json_atomic
from megatron_slm.posttrain.storage import ROLES_SUFFIX

RECORD = "reference.json"


def _hash_files(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                h.update(block)
    return h.hexdigest()


def reference_identity(cfg: SLMConfig) -> dict:
    """What the reference is: the starting checkpoint (checkpoint.load, else model.from) by the
    sha256 of its weights, or the random initialisation of train.seed."""
    from megatron_slm.checkpoint.layout import iter_dir, latest_iteration

    source = cfg.checkpoint.load or cfg.model.from_
    if source is None:
        return {"source": None, "init_seed": cfg.train.seed, "sha256": f"random-init-seed-{cfg.train.seed}"}
    iteration = latest_iteration(source)
    return {"source": str(Path(source).resolve()), "iteration": iteration,
            "sha256": _hash_files(iter_dir(source, iteration))}


def data_identity(data) -> list[dict]:
    return [{"prefix": os.path.abspath(s.prefix), "sha256": content_hash(s.prefix),
             "roles_sha256": content_hash(s.prefix + ROLES_SUFFIX)} for s in data.stores]


def cache_key(ref: dict, datasets: list[dict], seq_length: int, vocab) -> str:
    blob = json.dumps({"reference": ref["sha256"], "data": [d["sha256"] + d["roles_sha256"] for d in datasets],
                       "seq_length": seq_length, "vocab": vocab.identity()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def encoded_rows(data, records: np.ndarray):
    """EncodedSeq per (record, completion), in order chosen, rejected, for every record."""
    from megatron_slm.eval.scoring import EncodedSeq

    return [EncodedSeq(row, prompt_len, where=f"record {r}")
            for r in records for row, prompt_len in data.rows(int(r))]


def compute_reference(models, vocab, data, padded_vocab: int, progress: bool = False) -> np.ndarray:
    """[records, 2] sums of log p over each completion's tokens, by `models` (collective)."""
    from megatron_slm.eval.likelihood import MegatronBackend

    records = np.arange(len(data))
    scores = MegatronBackend(models, vocab, padded_vocab_size=padded_vocab, progress=progress).score(
        encoded_rows(data, records))
    return scores[:, 0].reshape(len(data), 2)


def _broadcast(obj):
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def ensure_reference(cfg: SLMConfig, models, vocab, data, padded_vocab: int, run_dir: Optional[Path],
                     resumed: bool, rank0: bool, log=print) -> np.ndarray:
    """The reference log-probabilities of `data`: from the run's store, or computed now."""
    import time

    import torch.distributed as dist

    ident = _broadcast((reference_identity(cfg), data_identity(data)) if rank0 else None)
    ref, datasets = ident
    key = cache_key(ref, datasets, cfg.train.seq_length, vocab)
    store = run_dir / "reference" if run_dir is not None else None
    path = store / f"{key}.npz" if store is not None else None
    if resumed and store is not None:
        recorded = json.loads((store / RECORD).read_text()) if (store / RECORD).is_file() else None
        if recorded is None:
            raise ConfigError(f"{run_dir} resumes a DPO run without its reference log-probabilities "
                              f"({store / RECORD} is missing); start a new run directory")
        if recorded["reference"]["sha256"] != ref["sha256"]:
            raise ConfigError(f"the DPO reference changed under a resumed run: {run_dir} was started from "
                              f"{recorded['reference'].get('source')} (sha256 {recorded['reference']['sha256'][:12]}) "
                              f"but this config starts from {ref.get('source')} (sha256 {ref['sha256'][:12]}); "
                              f"resume with the original model.from / checkpoint.load or start a new run directory")
        if not path.is_file():
            raise ConfigError(f"the preference data changed under a resumed run ({store} holds no reference "
                              f"log-probabilities for it, and the model is no longer the reference); resume with "
                              f"the original data.blend or start a new run directory")
    if path is not None and path.is_file():
        values = np.load(path)["logps"]
        log(f"[reference] loaded {len(values)} pairs' reference log-probabilities from {path}")
        return values
    t0 = time.perf_counter()
    log(f"[reference] computing the reference log-probabilities of {len(data)} pairs "
        f"(starting checkpoint {ref.get('source') or 'random init'}) at this run's layout")
    values = compute_reference(models, vocab, data, padded_vocab, progress=rank0)
    seconds = time.perf_counter() - t0
    if path is not None and rank0:
        store.mkdir(parents=True, exist_ok=True)
        np.savez(str(path) + ".tmp.npz", logps=values)
        os.replace(str(path) + ".tmp.npz", path)
        write_json_atomic(str(store / RECORD), {"reference": ref, "datasets": datasets, "key": key,
                                                "seq_length": cfg.train.seq_length, "pairs": len(values),
                                                "seconds": round(seconds, 3)})
    dist.barrier()
    log(f"[reference] {len(values)} pairs in {seconds:.1f}s" + (f", stored in {path}" if path is not None else ""))
    return values
