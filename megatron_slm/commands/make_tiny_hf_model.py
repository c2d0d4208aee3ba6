"""Write a tiny random Hugging Face causal LM: the stand-in base model of the CPU demo.

    python tools/make_tiny_hf_model.py --tokenizer examples/tokenizer/tiny-bpe --out demo_out/base-hf

Real runs start from a downloaded Llama-3.2 / Qwen2.5 directory instead; this gives the demo
and tests the same files (config.json, safetensors, tokenizer) with no download.
"""
from __future__ import annotations

import argparse
from pathlib import Path



def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokenizer", required=True, help="HF tokenizer dir (its length sets the vocabulary)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--family", choices=("llama", "qwen2"), default="llama")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--ffn", type=int, default=176)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if Path(args.out).exists():
        print(f"{args.out} exists; keeping it")
        return
    from transformers import AutoTokenizer

    from megatron_slm.testing.random_hf import make_random_hf_model

    vocab = len(AutoTokenizer.from_pretrained(args.tokenizer))
    make_random_hf_model(args.out, args.family, tokenizer_dir=args.tokenizer, seed=args.seed,
                         vocab_size=vocab, hidden_size=args.hidden, intermediate_size=args.ffn,
                         num_hidden_layers=args.layers, num_attention_heads=args.heads,
                         num_key_value_heads=args.kv_heads, max_position_embeddings=4096,
                         rope_theta=10000.0, tie_word_embeddings=True)
    print(f"wrote a random {args.family} model ({args.layers} layers, hidden {args.hidden}, vocab {vocab}) "
          f"to {args.out}")


if __name__ == "__main__":
    main()
