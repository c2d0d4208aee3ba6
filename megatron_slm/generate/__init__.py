"""Generation: speech and text continuations, cross-modal, from HF models or Megatron checkpoints (docs/generate.md).

prompts   audio / unit JSONL / text lines / interleaved segments -> Prompt -> token ids (document layout)
sampling  SamplingConfig (SlamKit / SpiritLM presets), modality masks and stop tokens, seeded draws
decode    the decoding loop shared by the backends (prefill, one token per step, per-row stops)
backends  HFSource (KV cache) and MegatronSource (Megatron-Core's KV cache, forward-only schedule, any TP/PP)
runner    batching, data-parallel rounds, output rows
vocoders  unit HiFi-GAN (textlesslib format) and codebook-mel Griffin-Lim
(GenPPL and Auto-BLEU of continuations are eval tasks: megatron_slm/eval/generative.py)
"""
