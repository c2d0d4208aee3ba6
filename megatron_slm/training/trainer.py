"""The training loop: Megatron-Core schedules, optimizer and checkpoints around our data.

    Trainer(cfg).run()

Per step: fetch this rank's microbatches (timed as data wait), run the pipeline schedule
(no pipelining, 1F1B, or interleaved 1F1B with vpp), reduce the per-token loss sums across
microbatches, DP and PP, guard against non-finite losses, step the optimizer and scheduler,
then log / validate / checkpoint / react to preemption signals at the step boundary.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import torch
import torch.distributed as dist
import yaml

from megatron_slm.config import SLMConfig, absolute_paths
from megatron_slm.console import quiet_cpu_warnings
from megatron_slm.models.flops import peak_tflops_for, training_flops_per_token
from megatron_slm.checkpoint import layout
from megatron_slm.checkpoint.lock import RunLock
from megatron_slm.models.record import write_model_record
from megatron_slm.models.provider import build_gpt_models
from megatron_slm.runtime.distributed import (choose_device, init_distributed, print_rank0, rank_from_env,
                                              world_size_from_env)
from megatron_slm.checkpoint import dist as ckpt
from megatron_slm.training import preemption
from megatron_slm.training.batches import SPEECH, TEXT, StepSampler, SyntheticDataset, make_loader, to_model_inputs
from megatron_slm.posttrain.objective import make_objective
from megatron_slm.training.metrics import MetricsLogger
from megatron_slm.training.optim import build_optimizer, build_scheduler, materialize_optimizer_state, wrap_ddp
from megatron_slm.training.plan import blend_prefixes, load_vocab, make_plan, tokenizer_dir
from megatron_slm.training.relaunch import end_of_run_logged, nothing_to_do_message
from megatron_slm.training.state import TrainState

LOSS_KEYS = ("lm_loss", "speech_loss", "text_loss")
TRAIN_CONSOLE = ("iteration", "lm_loss", "speech_loss", "text_loss", "lr", "grad_norm", "tokens_per_sec",
                 "model_tflops_per_gpu", "mfu", "step_time_s")


class NonFiniteLoss(RuntimeError):
    pass


class Trainer:
    def __init__(self, cfg: SLMConfig):
        from megatron.core import parallel_state as ps
        from megatron.core.distributed import finalize_model_grads

        self.cfg = cfg
        on_cuda = choose_device(cfg.runtime) == "cuda"
        if not on_cuda:
            quiet_cpu_warnings()
        self.vocab = load_vocab(cfg, tokenizer_dir(cfg))
        self.plan = make_plan(cfg, world_size_from_env(), on_cuda, self.vocab)  # all checks, before any work
        # one run per directory: taken before the process group forms, so a refused launch ends at once
        self.lock = RunLock(cfg.checkpoint.save).acquire() if cfg.checkpoint.save and rank_from_env() == 0 else None
        p = cfg.parallel
        self.info = init_distributed(cfg.runtime, p.tp, p.pp, p.vpp, cfg.train.seed)
        self.rank0 = self.info.rank == 0
        self.run_dir = Path(cfg.checkpoint.save) if cfg.checkpoint.save else Path.cwd()
        self.dp_rank, self.dp_size = ps.get_data_parallel_rank(), ps.get_data_parallel_world_size()
        self.is_last_stage = ps.is_pipeline_last_stage(ignore_virtual=True)

        self.models = build_gpt_models(self.plan.model, on_cuda=on_cuda)
        self.ddp_models = wrap_ddp(self.models, cfg)
        self.optimizer = build_optimizer(self.ddp_models, cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg, self.plan.total_steps)
        mcfg = self.models[0].config
        mcfg.finalize_model_grads_func = finalize_model_grads
        mcfg.grad_scale_func = self.optimizer.scale_loss
        no_sync = [m.no_sync for m in self.ddp_models]
        mcfg.no_sync_func = no_sync[0] if len(no_sync) == 1 else no_sync
        if p.overlap_param_gather and p.distributed_optimizer:
            sync = [m.start_param_sync for m in self.ddp_models]
            mcfg.param_sync_func = sync[0] if len(sync) == 1 else sync

        self.checkpointer = ckpt.Checkpointer(async_save=cfg.checkpoint.async_save)
        self.state = TrainState()
        self._load()
        self._write_run_files()
        self.metrics = MetricsLogger(self.run_dir, cfg.logging, enabled=self.rank0, run_config=cfg.to_dict(),
                                     resume_iteration=self.iteration)
        if cfg.train.exit_on_signal:
            preemption.install()  # already installed by pretrain_slm.py; here for library use
        else:
            preemption.uninstall()
        self.objective = make_objective(cfg, self.plan.arch.vocab_size, LOSS_KEYS, TRAIN_CONSOLE, self.vocab)
        self.forward_step = self.objective.forward_step
        self.flops_per_token = training_flops_per_token(self.plan.arch, cfg.train.seq_length)
        self.peak_tflops = peak_tflops_for(torch.cuda.get_device_name()) if on_cuda else None
        self._build_data()

    @property
    def iteration(self) -> int:
        return self.state.iteration

    # ------------------------------------------------------------------ setup

    def _load(self) -> None:
        c = self.cfg.checkpoint
        if layout.has_checkpoint(c.save):
            source, full = c.save, True  # automatic resume of this run
        elif c.load:
            source, full = c.load, c.load_optimizer
        elif self.cfg.model.from_:
            source, full = self.cfg.model.from_, False
        else:
            return
        state = ckpt.load_checkpoint(source, self.models, self.optimizer if full else None,
                                     self.scheduler if full else None)
        if full and state["loaded_optimizer"]:
            self.state.load(state)
        elif not full:
            self.optimizer.reload_model_params()
        print_rank0(f"[checkpoint] loaded {source} (iteration {state['iteration']}); "
                    f"continuing at step {self.iteration}, {self.state.consumed_samples} samples consumed")

    def _write_run_files(self) -> None:
        if not (self.rank0 and self.cfg.checkpoint.save):
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.yaml").write_text(yaml.safe_dump(absolute_paths(self.cfg).to_dict(), sort_keys=False))
        identity = {"vocab": self.vocab.identity(), "units": self.plan.units} if self.vocab is not None else None
        write_model_record(self.run_dir, self.plan.arch, self.plan.padded_vocab, identity)
        if self.vocab is not None and not (self.run_dir / "tokenizer").exists():
            self.vocab.save(self.run_dir / "tokenizer")

    def _build_data(self) -> None:
        cfg, t = self.cfg, self.cfg.train
        train_samples = self.plan.total_steps * t.global_batch_size
        valid_samples = t.eval_iters * t.global_batch_size
        if t.objective != "lm":  # sft / dpo: pair datasets (and, for dpo, the reference pass)
            from megatron_slm.posttrain.datasets import build_pair_datasets

            self.train_ds, self.valid_sets = build_pair_datasets(self, blend_prefixes(cfg), train_samples, valid_samples)
        elif cfg.data.source == "synthetic":
            self.train_ds = SyntheticDataset(self.plan.arch.vocab_size, t.seq_length, t.seed)
            self.valid_sets = {"valid": SyntheticDataset(self.plan.arch.vocab_size, t.seq_length, t.seed + 1)}
        else:
            import dataclasses

            from megatron_slm.data.blend import build_datasets

            if cfg.data.cache_dir is None and cfg.checkpoint.save:  # keep index caches with the run
                cfg = dataclasses.replace(cfg, data=dataclasses.replace(
                    cfg.data, cache_dir=str(Path(cfg.checkpoint.save) / "data_cache")))
            splits = build_datasets(cfg, self.vocab, train_samples, valid_samples, valid_samples)
            self.train_ds = splits.train
            self.valid_sets = {"valid": splits.valid} if splits.valid is not None else {}
            if len(splits.valid_per_dataset or {}) > 1:  # per-dataset losses only say more for a blend
                self.valid_sets.update(splits.valid_per_dataset)
        sampler = StepSampler(min(len(self.train_ds), train_samples), self.state.consumed_samples,
                              t.micro_batch_size, t.global_batch_size, self.dp_rank, self.dp_size)
        self.train_iter = iter(make_loader(self.train_ds, sampler, cfg.data.num_workers, self.objective.collate))

    # ------------------------------------------------------------------ steps

    def _device_batches(self, loader_iter, n: int) -> list[dict]:
        need_mask = not self.plan.on_cuda  # the local spec's unfused attention needs an explicit mask
        return self.objective.prepare([to_model_inputs(next(loader_iter), self.info.device, need_mask)
                                       for _ in range(n)])

    def _run_schedule(self, batches: list[dict], forward_only: bool) -> list[dict]:
        from megatron.core.pipeline_parallel import get_forward_backward_func

        t = self.cfg.train
        chunks = len(self.ddp_models)
        data = [iter(batches) for _ in range(chunks)] if chunks > 1 else iter(batches)
        return get_forward_backward_func()(
            forward_step_func=self.forward_step, data_iterator=data,
            model=self.ddp_models if chunks > 1 else self.ddp_models[0], num_microbatches=len(batches),
            seq_length=t.seq_length, micro_batch_size=t.micro_batch_size * self.objective.rows_per_sample,
            forward_only=forward_only)

    def _reduce(self, reports: list[dict], batches: list[dict]) -> tuple[dict, dict]:
        """Sum (loss, count) pairs over microbatches, then DP, then bring them from the last
        pipeline stage to every rank. Returns mean losses per token (None where a modality had
        no tokens) and the step's token counts per modality (all tokens, not only the loss's)."""
        from megatron.core import parallel_state as ps

        keys = self.objective.loss_keys
        sums = torch.zeros(len(keys) + 1, 2, dtype=torch.float64)
        if self.is_last_stage:  # one stage contributes, so the PP sum below counts once
            for rep in reports:
                for i, key in enumerate(keys):
                    sums[i] += rep[key].detach().to("cpu", torch.float64)
            for b in batches:
                modality = b["modality"]
                sums[-1, 0] += (modality == SPEECH).sum().item()
                sums[-1, 1] += (modality == TEXT).sum().item()
        sums = sums.to(self.info.device)
        dist.all_reduce(sums, group=ps.get_data_parallel_group())
        if ps.get_pipeline_model_parallel_world_size() > 1:
            dist.all_reduce(sums, group=ps.get_pipeline_model_parallel_group())
        sums = sums.cpu()
        losses = {k: (sums[i, 0] / sums[i, 1]).item() if sums[i, 1] > 0 else None for i, k in enumerate(keys)}
        return losses, {"speech": int(sums[-1, 0]), "text": int(sums[-1, 1])}

    def train_step(self) -> dict:
        timings = {}
        t0 = time.perf_counter()
        batches = self._device_batches(self.train_iter, self.plan.num_microbatches)
        t1 = time.perf_counter()
        for m in self.ddp_models:
            m.zero_grad_buffer()
        self.optimizer.zero_grad()
        reports = self._run_schedule(batches, forward_only=False)
        losses, counts = self._reduce(reports, batches)
        self.state.count_modalities(counts["speech"], counts["text"])
        t2 = time.perf_counter()
        record = dict(losses)
        loss = losses[self.objective.main_key]
        if not math.isfinite(loss):
            if self.cfg.train.nan_policy == "stop":
                raise NonFiniteLoss(f"non-finite loss {loss} at step {self.iteration + 1}; "
                                    f"stopping (train.nan_policy=stop). The last checkpoint is intact.")
            self.state.skipped_in_a_row += 1
            record.update(skipped=True, grad_norm=None, lr=self.scheduler.get_lr(self.optimizer.param_groups[0]))
            if self.state.skipped_in_a_row > self.cfg.train.max_skipped_steps:
                raise NonFiniteLoss(f"{self.state.skipped_in_a_row} consecutive non-finite steps (train.max_skipped_steps)")
        else:
            self.state.skipped_in_a_row = 0
            ok, grad_norm, _ = self.optimizer.step()
            if ok:
                self.scheduler.step(increment=self.cfg.train.global_batch_size)
            record.update(grad_norm=grad_norm, lr=self.optimizer.param_groups[0]["lr"])
        t3 = time.perf_counter()
        timings.update(time_data_s=t1 - t0, time_fwd_bwd_s=t2 - t1, time_optimizer_s=t3 - t2)
        self.state.step(self.cfg.train.global_batch_size, self.plan.tokens_per_step)
        record.update(timings)
        return record

    def evaluate(self) -> dict[str, dict]:
        t = self.cfg.train
        results = {}
        for m in self.ddp_models:
            m.eval()
        with torch.no_grad():
            for name, ds in self.valid_sets.items():
                total = min(len(ds), t.eval_iters * t.global_batch_size)
                total -= total % t.global_batch_size
                if total == 0:
                    continue
                sampler = StepSampler(total, 0, t.micro_batch_size, t.global_batch_size, self.dp_rank, self.dp_size)
                it = iter(make_loader(ds, sampler, 0, self.objective.collate))
                reports = []
                for _ in range(total // t.global_batch_size):
                    batches = self._device_batches(it, self.plan.num_microbatches)
                    reports += self._run_schedule(batches, True)
                results[name], _ = self._reduce(reports, [])
        for m in self.ddp_models:
            m.train()
        return results

    def _log_validation(self) -> None:
        results = self.evaluate()
        if not results:
            return
        record = {"validation": True, "iteration": self.iteration, "consumed_tokens": self.state.consumed_tokens}
        main = results.get("valid")
        if main is not None:
            record.update({k: v for k, v in main.items() if v is not None})
        for name, losses in results.items():
            if name != "valid":
                record[f"{name}/lm_loss"] = losses["lm_loss"]
        self.metrics.log(record)
        self.state.last_validation = record

    def _run_eval_tasks(self) -> None:
        from megatron_slm.eval.hook import evaluate_in_training

        scores = evaluate_in_training(self.models, self.cfg, self.vocab)
        self.metrics.log({"eval": True, "iteration": self.iteration, **scores})

    def _end_of_run_logged(self) -> bool:
        """A relaunch of a finished run: its final validation (and scores) are in metrics.jsonl
        already, so evaluating again would only append duplicates. Rank 0 reads, all agree."""
        kinds = (("validation",) if self.cfg.train.eval_iters and self.valid_sets else ()) + \
            (("eval",) if self.cfg.eval.tasks else ())
        done = self.rank0 and layout.has_checkpoint(self.cfg.checkpoint.save) and \
            end_of_run_logged(self.run_dir, self.iteration, kinds)
        flag = torch.tensor([1.0 if done else 0.0], device=self.info.device)
        dist.broadcast(flag, src=0)
        return bool(flag.item())

    def save(self) -> None:
        if not self.cfg.checkpoint.save:
            return
        state = {**self.state.state_dict(), "config": self.cfg.to_dict()}
        materialize_optimizer_state(self.optimizer)  # no update yet: save the state the first step would make
        seconds = self.checkpointer.save(self.cfg.checkpoint.save, self.iteration, self.models, self.optimizer,
                                         self.scheduler, state, keep_last=self.cfg.checkpoint.keep_last)
        self.metrics.message(f"[checkpoint] saved iteration {self.iteration} to "
                             f"{layout.iter_dir(self.cfg.checkpoint.save, self.iteration)} ({seconds:.1f}s)")

    def _signal_received(self) -> bool:
        flag = torch.tensor([1.0 if preemption.raised() else 0.0], device=self.info.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)  # every rank stops at the same step
        return bool(flag.item())

    def _exit_requested(self, start: float) -> bool:
        t = self.cfg.train
        if t.exit_interval and self.iteration % t.exit_interval == 0 and self.iteration < self.plan.total_steps:
            return True
        if t.exit_duration_minutes is not None:
            elapsed = torch.tensor([time.perf_counter() - start], device=self.info.device)
            dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)  # ranks must agree on the step
            return elapsed.item() / 60.0 >= t.exit_duration_minutes
        return False

    # ------------------------------------------------------------------ loop

    def run(self) -> dict:
        cfg, t, c = self.cfg, self.cfg.train, self.cfg.checkpoint
        total = self.plan.total_steps
        start_iteration, start = self.iteration, time.perf_counter()
        self.metrics.message(
            f"[train] {self.plan.arch.family} {self.plan.arch.num_layers}L h{self.plan.arch.hidden_size} "
            f"vocab {self.plan.arch.vocab_size} (padded {self.plan.padded_vocab}) | tp {cfg.parallel.tp} pp "
            f"{cfg.parallel.pp} dp {self.plan.dp}{' vpp ' + str(cfg.parallel.vpp) if cfg.parallel.vpp else ''} | "
            f"{self.info.device.type}/{self.info.backend} {cfg.precision.dtype} | steps {self.iteration}->{total} "
            f"x {self.plan.tokens_per_step} tokens | run dir {self.run_dir}")
        stopped_early = False
        overhead = 0.0  # the previous iteration's time outside train_step (logging, checks)
        while self.iteration < total:
            step_start = time.perf_counter()
            record = self.train_step()
            step_end = time.perf_counter()
            step_time = step_end - step_start
            record["time_loop_overhead_s"] = overhead
            self.checkpointer.poll()
            if self.iteration % cfg.logging.interval == 0 or self.iteration == total:
                tflops = self.flops_per_token * self.plan.tokens_per_step / step_time / self.plan.world_size / 1e12
                record.update(iteration=self.iteration, **self.state.counters(), step_time_s=step_time,
                              tokens_per_sec=self.plan.tokens_per_step / step_time, model_tflops_per_gpu=tflops,
                              mfu=tflops / self.peak_tflops if self.peak_tflops else None)
                if self.plan.on_cuda:
                    record["max_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
                self.metrics.log({k: record[k] for k in ("iteration", *[k for k in record if k != "iteration"])},
                                 self.objective.console)
            if t.eval_interval and self.iteration % t.eval_interval == 0 and self.iteration < total:
                self._log_validation()
            if cfg.eval.tasks and cfg.eval.interval and self.iteration % cfg.eval.interval == 0 \
                    and self.iteration < total:  # the end of the run evaluates anyway
                self._run_eval_tasks()
            if c.interval and self.iteration % c.interval == 0 and self.iteration < total:
                self.save()
            if t.exit_on_signal and self._signal_received():
                self.metrics.message(f"[train] preemption signal: checkpointing at step {self.iteration} and exiting")
                stopped_early = True
                break
            if self._exit_requested(start):
                self.metrics.message(f"[train] exit condition (train.exit_*) reached at step {self.iteration}")
                stopped_early = True
                break
            overhead = time.perf_counter() - step_end
        finished_before = start_iteration >= total and self._end_of_run_logged()
        if finished_before:
            self.metrics.message(nothing_to_do_message(total))
        elif not stopped_early:
            self._log_validation()
            if cfg.eval.tasks:
                self._run_eval_tasks()
        if self.iteration > start_iteration or stopped_early or not layout.has_checkpoint(c.save):
            self.save()
        self.checkpointer.wait()
        elapsed = time.perf_counter() - start
        summary = {"steps": self.iteration - start_iteration, "iteration": self.iteration,
                   "consumed_tokens": self.state.consumed_tokens, "seconds": elapsed, "stopped_early": stopped_early,
                   "final_validation": self.state.last_validation}
        self.metrics.message(
            f"[done] {summary['steps']} steps in {elapsed:.1f}s, now at step {self.iteration} "
            f"({self.state.consumed_tokens} tokens)" +
            (f", validation {self.objective.main_key} {self.state.last_validation.get(self.objective.main_key):.4f}"
             if self.state.last_validation else "") +
            (f"; checkpoint in {c.save}" if c.save else "") + f"; metrics in {self.metrics.path}")
        self.metrics.close()
        if self.lock is not None:
            self.lock.release()
        return summary
