"""The decoding loop, shared by every backend: prefill the prompts, then one token per step.

A backend (megatron_slm.generate.backends) is a `LogitsSource`:

    logits = src.begin(prompts, new_tokens)   # next-token logits [b, rows] after the prompts
    logits = src.advance(ids)                 # feed one id per row, logits of the next position
    ids = src.agree(ids)                      # every rank gets the ids the sampling rank drew
    src.end()

Only ranks with `src.samples` true hold logits (the last pipeline stage); they draw, and `agree`
hands the ids to every rank, so all ranks take the same decisions (stop, continue, feed).

Each row stops on its own (EOS, a modality switch, max_new_tokens, or the model's context);
finished rows keep feeding a pad id until the whole batch is done, and their outputs are cut.
With multi-codebook speech (`policy.frame`) each row's place in its frame picks its mask, and a
row that runs out of length inside a frame drops that partial frame: outputs end on whole frames.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol, Sequence

import torch

from megatron_slm.generate.sampling import (STOP_CONTEXT, STOP_LENGTH, GenerationError, SamplingConfig,
                                            TokenPolicy, next_tokens, prompt_generator)


class LogitsSource(Protocol):
    rows: int            # output rows of the model (padded vocabulary on Megatron)
    context: int         # longest sequence the model takes (prompt + continuation)
    samples: bool        # this rank holds logits and draws
    pad_id: int

    def begin(self, prompts: Sequence[Sequence[int]], new_tokens: int) -> Optional[torch.Tensor]: ...

    def advance(self, ids: torch.Tensor) -> Optional[torch.Tensor]: ...

    def agree(self, ids: Optional[torch.Tensor], batch: int) -> torch.Tensor: ...

    def end(self) -> None: ...


@dataclass
class Continuation:
    ids: list[int]
    stop: str


def check_fits(prompt_ids: Sequence[int], context: int, where: str) -> None:
    if len(prompt_ids) >= context:
        raise GenerationError(f"{where}: the prompt is {len(prompt_ids)} tokens, but the model's context is "
                              f"{context}: nothing can be generated (shorten it: --prompt-seconds cuts speech "
                              f"prompts; text must be cut in the prompt file)")


def decode(src: LogitsSource, prompts: Sequence[Sequence[int]], prompt_keys: Sequence[str],
           policy: TokenPolicy, cfg: SamplingConfig) -> list[Continuation]:
    """Continue every prompt of one batch; `prompt_keys` seed each row's sampler."""
    b = len(prompts)
    budget = [min(cfg.max_new_tokens, src.context - len(p)) for p in prompts]
    if min(budget) < 1:
        raise GenerationError("a prompt fills the model's context (check_fits should have caught it)")
    steps = max(budget)
    gens = [prompt_generator(cfg.seed, k) for k in prompt_keys] if not cfg.greedy else [None] * b
    seen = None
    if src.samples and cfg.repetition_penalty != 1.0:
        seen = torch.zeros(b, src.rows, dtype=torch.bool)
        for r, p in enumerate(prompts):
            seen[r, torch.as_tensor(list(p), dtype=torch.long)] = True
    out: list[list[int]] = [[] for _ in range(b)]
    stop: list[Optional[str]] = [None] * b
    frame = policy.frame
    phases = [frame.phase_after(p) for p in prompts] if frame is not None else None
    logits = src.begin(prompts, steps)
    try:
        for _ in range(steps):
            ids = None
            if src.samples:
                active = [g if stop[r] is None else None for r, g in enumerate(gens)]
                ids = next_tokens(logits, policy, cfg, active, seen, phases)
            ids = src.agree(ids, b)
            for r in range(b):
                if stop[r] is not None:
                    continue
                tok = int(ids[r])
                reason = policy.stop_reason(tok)
                if reason is not None:
                    stop[r] = reason
                    continue
                out[r].append(tok)
                if phases is not None:
                    phases[r] = frame.next_phase(phases[r], tok)
                if len(out[r]) >= budget[r]:
                    stop[r] = STOP_LENGTH if budget[r] == cfg.max_new_tokens else STOP_CONTEXT
                    if phases is not None and phases[r]:  # never end inside a frame
                        del out[r][max(0, len(out[r]) - phases[r]):]
            if all(s is not None for s in stop):
                break
            feed = torch.tensor([int(ids[r]) if stop[r] is None else src.pad_id for r in range(b)], dtype=torch.long)
            if seen is not None:
                seen[torch.arange(b), feed] = True
            logits = src.advance(feed)
    finally:
        src.end()
    return [Continuation(o, s or STOP_LENGTH) for o, s in zip(out, stop)]
