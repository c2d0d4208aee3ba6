"""The counters a training run carries from step to step and across restarts.

    state = TrainState()
    state.load(saved)              # from a checkpoint's slm_state.json
    state.step(samples, tokens, speech, text)
    saved = state.state_dict()     # what the next checkpoint records

`skipped_in_a_row` and `last_validation` live only in the running process: a restart begins
with no skipped steps and no validation yet.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

SAVED = ("iteration", "consumed_samples", "consumed_tokens", "consumed_speech_tokens", "consumed_text_tokens")


@dataclass
class TrainState:
    iteration: int = 0
    consumed_samples: int = 0
    consumed_tokens: int = 0
    consumed_speech_tokens: int = 0
    consumed_text_tokens: int = 0
    skipped_in_a_row: int = 0                 # consecutive non-finite steps (train.max_skipped_steps)
    last_validation: Optional[dict] = None    # the latest validation record

    def state_dict(self) -> dict:
        return {k: getattr(self, k) for k in SAVED}

    def load(self, saved: dict) -> None:
        for k in SAVED:
            setattr(self, k, int(saved.get(k, 0)))

    def step(self, samples: int, tokens: int) -> None:
        self.iteration += 1
        self.consumed_samples += samples
        self.consumed_tokens += tokens

    def count_modalities(self, speech: int, text: int) -> None:
        self.consumed_speech_tokens += speech
        self.consumed_text_tokens += text

    def counters(self) -> dict:
        """The consumed_* counters, as metrics.jsonl logs them."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k.startswith("consumed_")}
