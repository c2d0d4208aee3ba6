"""What a step records, and how a step ends early."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class Result:
    name: str
    title: str
    limit_s: int
    status: str = "pending"  # ok | failed | skipped | timeout
    seconds: float = 0.0
    figures: dict = field(default_factory=dict)
    reason: Optional[str] = None
    details: dict = field(default_factory=dict)
    log: Optional[str] = None


class StepTimeout(Exception):
    """A step (or one of its commands) ran past its time limit."""


class StepFailed(Exception):
    """A step ran and failed; the message says why."""
