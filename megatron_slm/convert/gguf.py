"""GGUF files as a conversion source: dequantised by transformers into a plain HF model dir.

    hf_dir = gguf_to_hf("SmolLM2-135M-Instruct.Q4_1.gguf", "work/smollm2-hf")

Needs `gguf` and `accelerate` (`pip install .[weights]`). transformers refuses to save a model
it loaded from GGUF (it keeps a quantisation config), so the dequantised weights are copied into
a fresh model of the same config, which saves as ordinary safetensors; the tokenizer comes from
the same file. The HF dir then converts like any other (`hf-to-mcore`).
"""
from __future__ import annotations

from pathlib import Path

from megatron_slm.convert.families import ConversionError


def is_gguf(path: str | Path) -> bool:
    return Path(path).is_file() and Path(path).suffix.lower() == ".gguf"


def gguf_to_hf(gguf_path: str | Path, out: str | Path) -> Path:
    """Dequantise `gguf_path` to fp32 and write an HF model dir (config, safetensors, tokenizer)."""
    import importlib.util

    import torch

    gguf_path, out = Path(gguf_path), Path(out)
    missing = [m for m in ("gguf", "accelerate") if importlib.util.find_spec(m) is None]
    if missing:
        raise ConversionError(f"{gguf_path}: reading GGUF needs {' and '.join(missing)} (pip install .[weights])")
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        loaded = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name,
                                                      dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    except (ValueError, OSError, KeyError) as e:
        raise ConversionError(f"{gguf_path}: not a GGUF model transformers can read ({e})") from None
    config = loaded.config
    config.quantization_config = None
    del config.quantization_config  # a plain model of the same shape saves as ordinary safetensors
    with torch.device("meta"):
        plain = type(loaded)(config)
    plain.load_state_dict(loaded.state_dict(), assign=True)
    plain.tie_weights()
    out.mkdir(parents=True, exist_ok=True)
    plain.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out
