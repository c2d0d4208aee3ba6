"""Training samples of stored pair datasets, for `train.objective=sft|dpo`.

    data = PairData.open(cfg, vocab, prefixes)       # every blend entry, split by data.split
    ds = data.split_dataset("train", num_samples)    # shuffled per epoch with train.seed
    ds[i] -> sft: {"tokens", "labels", "loss_mask", "modality"} of prompt ++ response ([S] each)
             dpo: the same for chosen and rejected ([2, S] each) + "ref_logps" [2] + "record"

One record per sequence (no packing): a row is prompt ++ completion, cut TRL-style when it is
longer than seq_length + 1 and right-padded; the loss mask covers the completion's targets only.
`collate_pairs` lays a DPO microbatch out as [chosen rows; rejected rows] (2 x micro_batch_size
sequences), so both completions of a pair travel through the pipeline in the same microbatch.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from megatron_slm.config import ConfigError, SLMConfig
from megatron_slm.data.storage import DatasetError
from megatron_slm.posttrain import records
from megatron_slm.posttrain.storage import PairStore

KIND_OF_OBJECTIVE = {"sft": "sft", "dpo": "preference"}
PAIR_KINDS = set(KIND_OF_OBJECTIVE.values())


def stored_kinds(prefixes: list[str]) -> list[str]:
    """What each dataset's sidecar says it holds ("text" for plain Megatron data without one)."""
    import os

    from megatron_slm.data.storage import read_sidecar, sidecar_path

    return [read_sidecar(p).get("kind", "text") if os.path.isfile(sidecar_path(p)) else "text" for p in prefixes]


def check_objective(cfg: SLMConfig, kinds: list[str]) -> None:
    """The blend's stored kinds fit train.objective: pair data only with sft/dpo, and the right pairs."""
    objective = cfg.train.objective
    if objective == "lm":
        for i, kind in enumerate(kinds):
            if kind in PAIR_KINDS:
                raise ConfigError(f"data.blend[{i}] holds {kind} data, which train.objective=lm cannot train on: "
                                  f"set train.objective={'dpo' if kind == 'preference' else 'sft'}")
        return
    want = KIND_OF_OBJECTIVE[objective]
    if cfg.data.source != "blend":
        raise ConfigError(f"train.objective={objective} needs data.source=blend with {want} datasets "
                          f"(tools/preprocess_data.py {want})")
    for i, kind in enumerate(kinds):
        if kind != want:
            raise ConfigError(f"data.blend[{i}] holds {kind} data but train.objective={objective} trains on {want} "
                              f"datasets (tools/preprocess_data.py {want})")
    weights = {e.weight for e in cfg.data.blend}
    if len(weights) > 1:
        raise ConfigError(f"train.objective={objective}: the datasets of a post-training blend are concatenated; "
                          f"give every data.blend entry the same weight (got {sorted(weights)})")


def split_ranges(n: int, split: str) -> dict[str, tuple[int, int]]:
    """Contiguous record ranges of `data.split` ("98,1,1"), as Megatron cuts documents."""
    parts = [float(x) for x in split.replace("/", ",").split(",")]
    parts += [0.0] * (3 - len(parts))
    total = sum(parts)
    bounds = np.round(np.cumsum([0.0] + parts) / total * n).astype(int)
    return {name: (int(bounds[i]), int(bounds[i + 1])) for i, name in enumerate(("train", "valid", "test"))}


def fit_row(prompt: np.ndarray, completion: np.ndarray, seq_length: int, keep_bos: bool) -> tuple[np.ndarray, int]:
    """(prompt ++ completion cut to seq_length + 1 tokens, prompt length) -- TRL's rule, as at preprocessing."""
    pair = records.PairIds(prompt, [completion])
    if len(prompt) + len(completion) > seq_length + 1:
        pair, _ = records.truncate(pair, seq_length + 1, (seq_length + 1) // 2, keep_bos, "")
    return np.concatenate([pair.prompt, pair.completions[0]]), len(pair.prompt)


@dataclass
class PairData:
    """The blend's pair stores, record ids global across them (store offsets)."""
    stores: list[PairStore]
    kind: str
    vocab: object
    seq_length: int
    split: str
    seed: int

    @classmethod
    def open(cls, cfg: SLMConfig, vocab, prefixes: list[str]) -> "PairData":
        """`prefixes`: the blend's datasets (training.plan.blend_prefixes)."""
        kind = KIND_OF_OBJECTIVE[cfg.train.objective]
        try:
            stores = [PairStore(p, vocab, kind) for p in prefixes]
        except DatasetError as e:
            raise ConfigError(f"data.blend: {e}") from None
        return cls(stores, kind, vocab, cfg.train.seq_length, cfg.data.split, cfg.train.seed)

    @property
    def offsets(self) -> np.ndarray:
        return np.cumsum([0] + [len(s) for s in self.stores])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def locate(self, record: int) -> tuple[PairStore, int]:
        s = int(np.searchsorted(self.offsets, record, side="right") - 1)
        return self.stores[s], record - int(self.offsets[s])

    def records_of(self, name: str) -> np.ndarray:
        out = []
        for store, off in zip(self.stores, self.offsets):
            beg, end = split_ranges(len(store), self.split)[name]
            out.append(np.arange(beg, end) + off)
        return np.concatenate(out).astype(np.int64)

    def rows(self, record: int) -> list[tuple[np.ndarray, int]]:
        """(row, prompt length) per completion of `record`, fitted to the sequence length."""
        store, i = self.locate(record)
        prompt, completions = store.parts(i)
        return [fit_row(prompt, c, self.seq_length, self.vocab.bos is not None) for c in completions]

    def truncated_count(self) -> int:
        """Records longer than seq_length + 1 (cut at read time; preprocessing counted its own cuts)."""
        limit = self.seq_length + 1
        n = 0
        for store in self.stores:
            if (store.meta or {}).get("max_length", limit + 1) <= limit:
                continue
            n += sum(1 for i in range(len(store)) if len(store.ids[i]) > limit)  # cheap bound: whole stored row
        return n

    def split_dataset(self, name: str, num_samples: int, ref_logps: Optional[np.ndarray] = None) -> "PairDataset":
        recs = self.records_of(name)
        if len(recs) == 0 and num_samples:
            raise ConfigError(f"data.split={self.split!r} leaves the {name} split of the {self.kind} data without "
                              f"records ({len(self)} in all); change data.split")
        return PairDataset(self, recs, num_samples, shuffle=name == "train", ref_logps=ref_logps)


class PairDataset(torch.utils.data.Dataset):
    def __init__(self, data: PairData, recs: np.ndarray, num_samples: int, shuffle: bool,
                 ref_logps: Optional[np.ndarray] = None) -> None:
        self.data, self.recs, self.num_samples, self.shuffle = data, recs, num_samples, shuffle
        self.ref_logps = ref_logps
        vocab = data.vocab
        self.pad = vocab.pad if vocab.has_pad else vocab.eod
        self._perms: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self.num_samples if len(self.recs) else 0

    def record(self, idx: int) -> int:
        epoch, pos = divmod(int(idx), len(self.recs))
        if not self.shuffle:
            return int(self.recs[pos])
        if epoch not in self._perms:
            self._perms[epoch] = np.random.default_rng((self.data.seed, 24, epoch)).permutation(len(self.recs))
        return int(self.recs[self._perms[epoch][pos]])

    def _sample(self, row: np.ndarray, prompt_len: int) -> dict[str, np.ndarray]:
        S = self.data.seq_length
        padded = np.full(S + 1, self.pad, dtype=np.int64)
        padded[:len(row)] = row
        target_pos = np.arange(1, S + 1)  # labels[j] = padded[j + 1]
        loss_mask = (target_pos >= prompt_len) & (target_pos < len(row))
        labels = padded[1:]
        return {"tokens": padded[:-1], "labels": labels, "loss_mask": loss_mask.astype(np.float32),
                "modality": self.data.vocab.modality_of(labels)}

    def __getitem__(self, idx: int) -> dict[str, np.ndarray]:
        rec = self.record(idx)
        samples = [self._sample(row, p) for row, p in self.data.rows(rec)]
        if self.data.kind == "sft":
            return samples[0]
        out = {k: np.stack([s[k] for s in samples]) for k in samples[0]}
        if self.ref_logps is None:
            raise RuntimeError("DPO samples need the reference log-probabilities (posttrain/reference.py)")
        out["ref_logps"] = self.ref_logps[rec].astype(np.float64)
        out["record"] = np.int64(rec)
        return out


def collate_pairs(items: list[dict]) -> dict:
    """DPO microbatch: [chosen_1..chosen_m; rejected_1..rejected_m] rows, ref_logps [m, 2]."""
    out = {}
    for k in items[0]:
        stacked = torch.from_numpy(np.stack([it[k] for it in items]))
        out[k] = stacked.transpose(0, 1).reshape(-1, *stacked.shape[2:]).contiguous() \
            if k not in ("ref_logps", "record") else stacked
    return out



def build_pair_datasets(trainer, prefixes: list[str], train_samples: int, valid_samples: int):
    """(train dataset, {"valid": dataset}) of a post-training run; for DPO, after the reference
    pass (the trainer's models still hold the starting weights, or the run resumes)."""
    from megatron_slm.checkpoint.layout import has_checkpoint
    from megatron_slm.posttrain.reference import ensure_reference

    cfg = trainer.cfg
    data = PairData.open(cfg, trainer.vocab, prefixes)
    cut = data.truncated_count()
    if cut:
        trainer.metrics.message(f"[data] {cut} of {len(data)} {data.kind} records are longer than "
                                f"train.seq_length + 1 = {data.seq_length + 1}: cut TRL-style (prompt from the left, "
                                f"completions from the right); preprocess with --max-length {data.seq_length + 1} "
                                f"to see which")
    ref = None
    if data.kind == "preference":
        ref = ensure_reference(cfg, trainer.models, trainer.vocab, data, trainer.plan.padded_vocab,
                               Path(cfg.checkpoint.save) if cfg.checkpoint.save else None,
                               resumed=has_checkpoint(cfg.checkpoint.save), rank0=trainer.rank0,
                               log=trainer.metrics.message)
    train = data.split_dataset("train", train_samples, ref)
    valid = {"valid": data.split_dataset("valid", valid_samples, ref)} if len(data.records_of("valid")) else {}
    return train, valid
