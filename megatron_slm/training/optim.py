"""Model wrapping (DDP), the Megatron optimizer and the learning-rate schedule."""
from __future__ import annotations

import math

from megatron_slm.config import SLMConfig


def wrap_ddp(models: list, cfg: SLMConfig) -> list:
    """Megatron DDP: gradients land in `param.main_grad` buffers that the Megatron optimizer
    (and the distributed optimizer's reduce-scatter) read."""
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig

    ddp_config = DistributedDataParallelConfig(
        grad_reduce_in_fp32=True, overlap_grad_reduce=cfg.parallel.overlap_grad_reduce,
        overlap_param_gather=cfg.parallel.overlap_param_gather,
        use_distributed_optimizer=cfg.parallel.distributed_optimizer)
    wrapped = []
    for i, model in enumerate(models):
        wrapped.append(DistributedDataParallel(
            config=model.config, ddp_config=ddp_config, module=model,
            # Only the first chunk may skip bucketing; Megatron-LM's rule for interleaved PP.
            disable_bucketing=i > 0))
    return wrapped


def build_optimizer(ddp_models: list, cfg: SLMConfig):
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer

    from megatron_slm.runtime import mcore_fixes

    mcore_fixes.apply()
    o, prec = cfg.optimizer, cfg.precision
    config = OptimizerConfig(
        optimizer="adam" if o.name == "adamw" else "sgd", lr=o.lr, min_lr=o.min_lr,
        weight_decay=o.weight_decay, adam_beta1=o.adam_beta1, adam_beta2=o.adam_beta2,
        adam_eps=o.adam_eps, clip_grad=o.clip_grad, bf16=prec.dtype == "bf16", fp16=prec.dtype == "fp16",
        params_dtype=ddp_models[0].config.params_dtype,
        use_distributed_optimizer=cfg.parallel.distributed_optimizer,
        overlap_param_gather=cfg.parallel.overlap_param_gather)
    return get_megatron_optimizer(config, ddp_models)


def warmup_steps(cfg: SLMConfig, total_steps: int) -> int:
    o = cfg.optimizer
    if o.warmup_iters is not None:
        return o.warmup_iters
    return int(math.ceil((o.warmup_fraction or 0.0) * total_steps))


def build_scheduler(optimizer, cfg: SLMConfig, total_steps: int):
    """Megatron's OptimizerParamScheduler counts samples, so steps are scaled by the batch."""
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

    o = cfg.optimizer
    gbs = cfg.train.global_batch_size
    warmup = warmup_steps(cfg, total_steps)
    decay_steps = max(total_steps, warmup + 1) * gbs  # Megatron asserts warmup < decay
    return OptimizerParamScheduler(
        optimizer, init_lr=0.0, max_lr=o.lr, min_lr=o.min_lr,
        lr_warmup_steps=warmup * gbs, lr_decay_steps=decay_steps,
        lr_decay_style=o.decay_style.upper() if o.decay_style == "wsd" else o.decay_style,
        start_wd=o.weight_decay, end_wd=o.weight_decay, wd_incr_steps=decay_steps, wd_incr_style="constant",
        use_checkpoint_opt_param_scheduler=True, override_opt_param_scheduler=False,
        wsd_decay_steps=int(o.wsd_decay_fraction * decay_steps) if o.decay_style == "wsd" else None,
        lr_wsd_decay_style=o.wsd_decay_style if o.decay_style == "wsd" else None)


def materialize_optimizer_state(optimizer) -> None:
    """Create the moments of an optimizer that has not stepped yet, exactly as its first step
    would (zeros, step 0). A checkpoint saved before the first update (train.iters=0, or fp16
    whose first steps all overflow) then holds every key a load expects, and the distributed
    optimizer, which reads one step count from its states, can save at all."""
    import torch

    for opt in getattr(optimizer, "chained_optimizers", [optimizer]):
        inner, init = getattr(opt, "optimizer", None), getattr(opt, "init_state_fn", None)
        if inner is None or init is None or len(inner.state) > 0:
            continue
        init(inner, getattr(opt, "config", None))
        if isinstance(inner, (torch.optim.Adam, torch.optim.AdamW)):  # torch keeps the step per parameter
            for group in inner.param_groups:
                on_device = group.get("fused") or group.get("capturable")
                for p in group["params"]:
                    inner.state[p].setdefault("step", torch.zeros((), dtype=torch.float32,
                                                                  device=p.device if on_device else "cpu"))
