"""A hash of a model's weights: the part of a speech tokenizer's identity that a path cannot give
(two directories may hold different weights under one name, or one set of weights under two)."""
from __future__ import annotations

import hashlib

import torch


def state_dict_sha256(module: torch.nn.Module) -> str:
    """sha256 over the names, dtypes, shapes and bytes of the parameters and buffers, in name order."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{list(t.shape)}\n".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
