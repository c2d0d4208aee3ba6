"""Spoken-LM likelihood benchmarks (docs/eval.md).

items       the scored-item JSONL format
benchmarks  what each benchmark is, its reader (folder layout or HF dataset), the registry, audio -> items
scoring     items -> token sequences -> one log-likelihood per candidate
likelihood  HF causal LM, or Megatron GPTModels at any TP/PP/DP (forward-only schedule)
report      accuracies with ties = 0.5, bootstrap CIs, per-part rows, JSON + table
hook        evaluate_in_training(models, cfg, vocab) for the trainer
generative  GenPPL and Auto-BLEU of generated continuations (Whisper transcript, text-LM perplexity)
"""
