"""Workarounds for Megatron-Core bugs we hit, applied once, each scoped as narrowly as possible.

Remove an entry when the pinned megatron-core range no longer needs it.
"""
from __future__ import annotations

import torch

_APPLIED = False


def apply() -> None:
    global _APPLIED
    if _APPLIED:
        return
    _APPLIED = True
    _distributed_optimizer_step_on_load()
    _zero_optimizer_step_on_load()
    _checkpoint_results_queue_by_fork()


def _distributed_optimizer_step_on_load() -> None:
    """megatron-core 0.16, distributed optimizer with torch's Adam (no Apex/TE: every CPU run).

    Loading a `fully_reshardable` checkpoint raises KeyError 'step': the loader skips the
    per-parameter 'step' it then copies into. The step is restored from the common state anyway, so
    we hand back the current value, making that copy a no-op."""
    from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer

    original = DistributedOptimizer._set_main_param_and_optimizer_states

    def set_states(self, model_param, tensors):
        if "step" not in tensors and not self.config.use_precision_aware_optimizer_no_fp8_or_ds_fp8:
            group_index, group_order = self.model_param_group_index_map[model_param]
            main_param = self.optimizer.param_groups[group_index]["params"][group_order]
            step = self.optimizer.state[main_param].get("step")
            if step is not None:
                tensors = {**tensors, "step": step}
        return original(self, model_param, tensors)

    DistributedOptimizer._set_main_param_and_optimizer_states = set_states

    # The same loader also assigns ONE shared 'step' tensor to every parameter's state; torch's
    # foreach Adam then increments it once per parameter per step, corrupting bias correction
    # after a resume. Give each parameter its own copy.
    original_load = DistributedOptimizer.load_state_dict

    def load_state_dict(self, state_dict):
        original_load(self, state_dict)
        for state in self.optimizer.state.values():
            if isinstance(state.get("step"), torch.Tensor):
                state["step"] = state["step"].clone()

    DistributedOptimizer.load_state_dict = load_state_dict


def _zero_optimizer_step_on_load() -> None:
    """megatron-core 0.16, regular (non-distributed) optimizers with torch's Adam.

    `sharded_state_dict` records the shared step only `if step:`, so a checkpoint saved before the
    first update (step 0: train.iters=0, or fp16 steps skipped on overflow) has none, and torch's
    Adam then raises KeyError 'step' on load. A missing shared step is that zero."""
    from megatron.core.optimizer.optimizer import Float16OptimizerWithFloat16Params, FP32Optimizer

    def patch(cls, key):
        original = cls.load_state_dict

        def load_state_dict(self, state_dict):
            inner = state_dict.get(key, state_dict.get("optimizer_state_dict")) if key else state_dict
            states = inner.get("state", {}) if isinstance(inner, dict) else {}
            if "common_step" not in states and isinstance(self.optimizer, (torch.optim.Adam, torch.optim.AdamW)):
                for param_state in states.values():
                    if isinstance(param_state, dict) and param_state and "step" not in param_state:
                        param_state["step"] = torch.zeros((), dtype=torch.float32)
            return original(self, state_dict)

        cls.load_state_dict = load_state_dict

    patch(Float16OptimizerWithFloat16Params, "optimizer")
    patch(FP32Optimizer, None)


def _checkpoint_results_queue_by_fork() -> None:
    """megatron-core 0.16, every dist-checkpoint save (synchronous ones too), CPU runs.

    FileSystemWriterAsync gets its results queue from a *spawn*-context Manager: a fresh interpreter
    that re-imports the trainer's main module, ~3 s of wall time the first time a process saves. A
    run of a CPU sweep is short and saves once, so that is a large share of it. Megatron forks its
    writer processes in the same save anyway; a forked Manager starts in milliseconds. (On CUDA the
    spawn context is kept: nothing is gained there and fork after CUDA initialisation is unsafe.)"""
    if torch.cuda.is_available():
        return
    import multiprocessing

    from megatron.core.dist_checkpointing.strategies import filesystem_async

    def results_queue():
        if filesystem_async._results_queue is None:
            filesystem_async._results_queue = multiprocessing.get_context("fork").Manager().Queue()
        return filesystem_async._results_queue

    filesystem_async._get_write_results_queue = results_queue
