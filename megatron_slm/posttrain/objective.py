"""The DPO loss and what `train.objective=sft|dpo` changes in a training step.

DPO (sigmoid loss, Rafailov et al.; TRL's `loss_type="sigmoid"`), per pair with
delta = (log pi(c) - log ref(c)) - (log pi(r) - log ref(r)):

    loss = -(1 - eps) * logsigmoid(beta * delta) - eps * logsigmoid(-beta * delta)   (eps: label smoothing)
    rewards = beta * (log pi - log ref), accuracy = [reward(c) > reward(r)], margin = reward(c) - reward(r)

plus, with dpo.sft_weight = alpha > 0, alpha x the NLL of the chosen tokens, averaged per chosen
token over the global batch (TRL's `loss_type=["sigmoid", "sft"]`, `loss_weights=[1, alpha]`).
Log-probabilities are sums over a completion's tokens, from the same vocab-parallel cross entropy
as the LM loss (padding rows masked), so they hold at any TP and come from the last stage at any PP.

Megatron divides the summed loss by the summed counts (calculate_per_token_loss); a pair counts
one, so the gradient is that of the mean over the step's pairs, whatever the microbatching and DP.
The SFT term's per-token mean needs the step's chosen-token count, known before the schedule runs:
`prepare` puts `pairs / chosen tokens` of the global batch into each microbatch.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from megatron_slm.training.loss import LMObjective, codebooks_of, vocab_parallel_lm_loss

DPO_KEYS = ("loss", "dpo_loss", "sft_loss", "reward_accuracy", "reward_margin", "chosen_rewards",
            "rejected_rewards", "chosen_logps", "rejected_logps")
DPO_CONSOLE = ("iteration", "loss", "reward_accuracy", "reward_margin", "chosen_logps", "rejected_logps",
               "sft_loss", "lr", "grad_norm", "step_time_s")


def dpo_losses(chosen: torch.Tensor, rejected: torch.Tensor, ref_chosen: torch.Tensor, ref_rejected: torch.Tensor,
               beta: float, label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(per-pair loss, chosen rewards, rejected rewards) from summed completion log-probabilities."""
    chosen_ratio, rejected_ratio = chosen - ref_chosen, rejected - ref_rejected
    delta = chosen_ratio - rejected_ratio
    losses = -(1 - label_smoothing) * F.logsigmoid(beta * delta) - label_smoothing * F.logsigmoid(-beta * delta)
    return losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach()


def dpo_loss_func(loss_mask: torch.Tensor, ref_logps: torch.Tensor, sft_scale: torch.Tensor, beta: float,
                  label_smoothing: float, sft_weight: float, output_tensor: torch.Tensor):
    """Loss sum over this microbatch's m pairs (rows [chosen; rejected]), m, and [sum, count] reports."""
    nll = output_tensor.float() * loss_mask.float()  # per-token -log p of completion targets
    m = ref_logps.shape[0]
    logps = -nll.sum(dim=1).double()
    chosen, rejected = logps[:m], logps[m:]
    ref = ref_logps.to(logps.device, torch.float64)
    losses, r_c, r_r = dpo_losses(chosen, rejected, ref[:, 0], ref[:, 1], beta, label_smoothing)
    chosen_nll, chosen_tokens = nll[:m].sum().double(), loss_mask[:m].float().sum().double()
    total = losses.sum()
    if sft_weight:
        total = total + sft_weight * chosen_nll * sft_scale.to(total.device, torch.float64)
    count = torch.tensor(float(m), dtype=torch.float64, device=total.device)
    pair = lambda value: torch.stack([value.detach().sum().double(), count])  # noqa: E731
    report = {"loss": pair(total), "dpo_loss": pair(losses), "sft_loss": torch.stack([chosen_nll.detach(), chosen_tokens]),
              "reward_accuracy": pair((r_c > r_r).double()), "reward_margin": pair(r_c - r_r),
              "chosen_rewards": pair(r_c), "rejected_rewards": pair(r_r),
              "chosen_logps": pair(chosen.detach()), "rejected_logps": pair(rejected.detach())}
    return total.float(), torch.tensor(m, dtype=torch.int, device=total.device), report


class DPOObjective:
    """train.objective=dpo: pair microbatches, the DPO loss, its metrics."""
    loss_keys = DPO_KEYS
    main_key = "loss"
    console = DPO_CONSOLE
    rows_per_sample = 2  # chosen + rejected of each pair in the same microbatch

    def __init__(self, cfg, vocab_size: int) -> None:
        from megatron_slm.posttrain.datasets import collate_pairs

        self.cfg, self.vocab_size, self.collate = cfg, vocab_size, collate_pairs

    def forward_step(self, data_iterator, model):
        batch = next(data_iterator)
        output = model(batch["tokens"], batch["position_ids"], batch["attention_mask"])
        if getattr(model, "module", model).post_process:
            output = vocab_parallel_lm_loss(output, batch["labels"], self.vocab_size)
        d = self.cfg.dpo
        return output, functools.partial(dpo_loss_func, batch["loss_mask"], batch["ref_logps"], batch["sft_scale"],
                                         d.beta, d.label_smoothing, d.sft_weight)

    def prepare(self, batches: list[dict]) -> list[dict]:
        """Give every microbatch the global batch's pairs / chosen tokens (the SFT term's normaliser)."""
        import torch.distributed as dist
        from megatron.core import parallel_state as ps

        counts = torch.zeros(2, dtype=torch.float64)
        for b in batches:
            m = b["ref_logps"].shape[0]
            counts[0] += m
            counts[1] += b["loss_mask"][:m].double().sum().cpu()
        counts = counts.to(batches[0]["tokens"].device)
        dist.all_reduce(counts, group=ps.get_data_parallel_group())
        scale = (counts[0] / counts[1].clamp(min=1)).to(torch.float64)
        for b in batches:
            b["sft_scale"] = scale
        return batches


def make_objective(cfg, vocab_size: int, loss_keys: tuple, console: tuple, vocab=None):
    """The objective of train.objective: DPO here, lm and sft the LM objective of training/loss.py."""
    if cfg.train.objective == "dpo":
        return DPOObjective(cfg, vocab_size)
    return LMObjective(vocab_size, loss_keys, console, codebooks_of(vocab))
