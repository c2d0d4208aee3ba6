"""Prompts -> batches -> continuations -> output rows, for the generate command and generative eval.

    job = GenerationJob(source, vocab, policy, cfg, model_info, unit_identity, batch_size=16)
    summary = run_generation(job, prompts, on_rows=write)   # collective on Megatron; rows on rank 0

Batches are made of prompts of similar length (little left padding); with data parallelism each
replica takes every dp-th batch, and after every round rank 0 gathers the replicas' rows, so an
interrupted run keeps everything finished so far (`--resume` skips those ids).

One output row per prompt:
  {"id", "prompt": {"where", "num_tokens", "seconds", "segments"}, "output_modality",
   "generated_ids", "units" (speech) | "text" (text) | "segments" (any), "stop", "num_generated",
   "settings": {sampling...}, "model": {...}, "unit_identity": {...} | null, ["wav"]}
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

from megatron_slm.generate.decode import Continuation, check_fits, decode
from megatron_slm.generate.prompts import SPEECH, TEXT, Prompt, encode_prompt
from megatron_slm.generate.sampling import SamplingConfig, TokenPolicy


@dataclass
class GenerationJob:
    source: object          # a decode.LogitsSource
    vocab: object
    policy: TokenPolicy
    cfg: SamplingConfig
    model_info: dict
    unit_identity: Optional[dict] = None
    batch_size: int = 16
    stop_at_switch: bool = True
    progress: bool = False

    def settings(self) -> dict:
        return {**self.cfg.to_json(), "stop_at_switch": self.stop_at_switch, "output_modality": self.policy.output}


@dataclass
class GenerationSummary:
    prompts: int = 0
    generated_tokens: int = 0
    seconds: float = 0.0
    stops: Counter = field(default_factory=Counter)

    @property
    def tokens_per_second(self) -> float:
        return self.generated_tokens / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        stops = ", ".join(f"{k} {v}" for k, v in sorted(self.stops.items()))
        return (f"generated {self.generated_tokens} tokens for {self.prompts} prompt(s) in {self.seconds:.1f} s "
                f"({self.tokens_per_second:.1f} tokens/s); stops: {stops or 'none'}")


def encode_all(prompts: Sequence[Prompt], vocab, output: str, context: int) -> list[list[int]]:
    out = []
    for p in prompts:
        ids = encode_prompt(p, vocab, output)
        check_fits(ids, context, f"{p.where}: prompt {p.id!r}")
        out.append(ids)
    return out


def make_batches(lengths: Sequence[int], batch_size: int, equal_lengths: bool = False) -> list[list[int]]:
    """Indices grouped by length (longest first); with `equal_lengths` a batch holds one length."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    for i in order:
        if batches and len(batches[-1]) < batch_size and (not equal_lengths or lengths[batches[-1][0]] == lengths[i]):
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def continuation_fields(cont: Continuation, vocab, output: str) -> dict:
    """The continuation as units / text / segments (ids are in the output modality by the mask)."""
    ids = cont.ids
    if output == SPEECH:
        return {"units": [i - vocab.unit_offset for i in ids]}
    if output == TEXT:
        return {"text": vocab.decode(ids)}
    segments: list[dict] = []
    mod = vocab.modality_of(ids) if ids else []
    for tok, m in zip(ids, mod):
        kind = "units" if m == 1 else "text"
        if not segments or kind not in segments[-1]:
            segments.append({kind: []})
        segments[-1][kind].append(tok)
    for s in segments:
        if "units" in s:
            s["units"] = [i - vocab.unit_offset for i in s["units"]]
        else:
            s["text"] = vocab.decode(s["text"])
    return {"segments": segments}


def make_row(job: GenerationJob, prompt: Prompt, prompt_ids: Sequence[int], cont: Continuation) -> dict:
    return {"id": prompt.id,
            "prompt": {"where": prompt.where, "num_tokens": len(prompt_ids), "seconds": prompt.seconds,
                       "segments": [s.to_json() for s in prompt.segments]},
            "output_modality": job.policy.output, "generated_ids": cont.ids,
            **continuation_fields(cont, job.vocab, job.policy.output),
            "stop": cont.stop, "num_generated": len(cont.ids), "settings": job.settings(),
            "model": job.model_info, "unit_identity": job.unit_identity}


def _dp() -> tuple[int, int, object]:
    import torch.distributed as dist

    if not dist.is_initialized():
        return 0, 1, None
    from megatron.core import parallel_state as ps

    if not ps.model_parallel_is_initialized():
        return 0, 1, None
    return ps.get_data_parallel_rank(), ps.get_data_parallel_world_size(), ps.get_data_parallel_group()


def _is_rank0() -> bool:
    import torch.distributed as dist

    return not dist.is_initialized() or dist.get_rank() == 0


def run_generation(job: GenerationJob, prompts: Sequence[Prompt],
                   on_rows: Optional[Callable[[list[dict]], None]] = None) -> tuple[GenerationSummary, list[dict]]:
    """Generate for every prompt (collective under torchrun). Rank 0 gets every row, in rounds
    through `on_rows`, and all of them in the returned list (other ranks get an empty list)."""
    import torch.distributed as dist
    from tqdm import tqdm

    encoded = encode_all(prompts, job.vocab, job.policy.output, job.source.context)
    batches = make_batches([len(e) for e in encoded], job.batch_size, getattr(job.source, "equal_lengths", False))
    dp_rank, dp_size, dp_group = _dp()
    rank0 = _is_rank0()
    summary = GenerationSummary(prompts=len(prompts))
    rows_all: list[dict] = []
    bar = tqdm(total=len(prompts), desc="generating", unit="prompt", disable=not (job.progress and rank0))
    for start in range(0, len(batches), dp_size):
        t0 = time.time()  # generation time only: what on_rows does (vocoding, writing) is not counted
        mine = batches[start + dp_rank] if start + dp_rank < len(batches) else []
        rows = []
        if mine:
            conts = decode(job.source, [encoded[i] for i in mine], [prompts[i].id for i in mine], job.policy, job.cfg)
            rows = [make_row(job, prompts[i], encoded[i], c) for i, c in zip(mine, conts)]
        if dp_size > 1:
            gathered: list = [None] * dp_size
            dist.all_gather_object(gathered, rows, group=dp_group)
            rows = [r for part in gathered for r in part]
        summary.seconds += time.time() - t0
        for r in rows:
            summary.stops[r["stop"]] += 1
            summary.generated_tokens += r["num_generated"]
        bar.update(len(rows))
        if rank0:
            if on_rows is not None:
                on_rows(rows)
            rows_all += rows
    bar.close()
    return summary, rows_all
