"""Megatron-Core workarounds (megatron_slm/runtime/mcore_fixes.py) that need no process group."""
import multiprocessing

import torch

from megatron_slm.runtime import mcore_fixes


def test_checkpoint_results_queue_is_forked_not_spawned(monkeypatch):
    """The first dist-checkpoint save of a CPU process must not start a spawn Manager (a fresh
    interpreter re-importing the trainer: seconds per run of a sweep)."""
    from megatron.core.dist_checkpointing.strategies import filesystem_async

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(filesystem_async, "_results_queue", None)
    monkeypatch.setattr(filesystem_async, "_get_write_results_queue", filesystem_async._get_write_results_queue)
    mcore_fixes._checkpoint_results_queue_by_fork()
    asked = []
    real = multiprocessing.get_context
    monkeypatch.setattr(multiprocessing, "get_context", lambda method=None: asked.append(method) or real(method))
    queue = filesystem_async._get_write_results_queue()
    queue.put({"written": 1})
    assert queue.get(timeout=10) == {"written": 1}
    assert asked == ["fork"] and filesystem_async._get_write_results_queue() is queue  # made once
