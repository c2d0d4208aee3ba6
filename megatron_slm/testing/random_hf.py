"""Random-weight HF models of a given shape, for tests and the conversion benchmark.

Built with transformers itself (config class + `from_config` + `save_pretrained`) so the files
are exactly what real checkpoints look like; no download involved.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch

LLAMA3_ROPE = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8192}


def make_random_hf_model(out: str | Path, model_type: str, tokenizer_dir: Optional[str | Path] = None,
                         dtype: torch.dtype = torch.float32, seed: int = 0, std: float = 0.05,
                         max_shard_size: str = "5GB", **config: Any) -> Path:
    """Write `out/` with config.json, safetensors and (when given) the tokenizer."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir)) if tokenizer_dir else None
    if tok is not None:
        config.setdefault("bos_token_id", tok.bos_token_id)
        config.setdefault("eos_token_id", tok.eos_token_id)
    cfg = AutoConfig.for_model(model_type, **config)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    model = model.to_empty(device="cpu")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)  # not all-ones, so a swapped norm would show
            else:
                p.normal_(0.0, std)
    model.tie_weights()
    # rotary inv_freq buffers were left empty by to_empty(): recompute them
    for module in model.modules():
        if hasattr(module, "rope_init_fn") and hasattr(module, "inv_freq"):
            inv_freq, _ = module.rope_init_fn(module.config, "cpu")
            module.inv_freq.copy_(inv_freq)
            if hasattr(module, "original_inv_freq"):
                module.original_inv_freq = inv_freq
    out = Path(out)
    model.save_pretrained(str(out), max_shard_size=max_shard_size)
    if tok is not None:
        tok.save_pretrained(str(out))
    return out
