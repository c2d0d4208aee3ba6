"""Spoken-LM accuracies during training.

The trainer calls, on every rank, every `eval.interval` steps (and at the end):

    from megatron_slm.eval.hook import evaluate_in_training
    accs = evaluate_in_training(models, cfg, vocab)      # {"ssc/accuracy": 0.61, ...}
    metrics.log({"eval": True, "iteration": it, **accs})  # rank 0 writes the metrics.jsonl line

`models` are this rank's model chunks (DDP-wrapped or not); the call is collective (forward-only
pipeline schedule, batches split across data-parallel ranks) and returns the same dict on every
rank. Benchmarks are read once from `<eval.data>/<task>.jsonl` and kept in memory; the models'
train/eval mode is restored afterwards. The scoring is `eval/run.py`'s, as in tools/eval_slm.py.
"""
from __future__ import annotations

from megatron_slm.eval import run
from megatron_slm.eval.likelihood import MegatronBackend
from megatron_slm.eval.items import ItemError


def load_training_benchmarks(cfg, vocab) -> list:
    """Read and check every benchmark in cfg.eval.tasks (kept in memory for the evaluations);
    ItemError naming the first that is missing or does not fit. The run plan calls it before step 0."""
    if not cfg.eval.data:
        raise ItemError("eval.tasks is set but eval.data (the directory of prepared benchmarks) is not")
    sets = run.load_sets(run.benchmark_files(cfg.eval.data, list(cfg.eval.tasks)), cache=True)
    identity = run.expected_unit_identity(cfg.checkpoint.save, cfg.data.tokenizer, [b.path for b in cfg.data.blend])
    run.check_sets(sets, identity, vocab)
    return sets


def evaluate_in_training(models: list, cfg, vocab) -> dict[str, float]:
    """{"<task>/accuracy": float} for every task in cfg.eval.tasks (empty dict when none)."""
    tasks = list(cfg.eval.tasks or [])
    if not tasks:
        return {}
    sets = load_training_benchmarks(cfg, vocab)
    scores = run.score_sets(sets, vocab, MegatronBackend(models, vocab, padded_vocab_size=None), reduce=cfg.eval.score)
    return run.accuracies(scores)
