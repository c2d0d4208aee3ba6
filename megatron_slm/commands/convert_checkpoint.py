"""Convert checkpoints between Hugging Face and megatron-slm (Megatron-Core dist checkpoints).

  hf-to-mcore  HF text LM (Llama 3.x, Qwen2/2.5, Mistral; safetensors) -> run directory at
               iteration 0 with <Un0>..<Un{K-1}>, <speech>, <text> added at ids V..V+K+1;
               pretrain_slm.py loads it with any TP/PP (checkpoint.load=OUT or model.from=OUT)
  mcore-to-hf  any training checkpoint (any TP/PP, with or without optimizer) -> HF model
               (safetensors shards + index, config, tokenizer), padding trimmed
  verify       run the Megatron model (TP/PP given) and the HF model on the same tokens and
               compare logits; exits 1 above --tolerance. With --tp*--pp > 1 it starts itself
               as TP*PP local ranks (or run it under torchrun yourself with TP*PP processes)

Examples:
  python tools/convert_checkpoint.py hf-to-mcore --hf-dir /models/Llama-3.2-3B --out ckpt/llama3b-slm --tp 2 --pp 2
  python tools/convert_checkpoint.py mcore-to-hf --mcore-dir runs/sims-3b --out hf/sims-3b --dtype bf16
  python tools/convert_checkpoint.py verify --hf-dir hf/sims-3b --mcore-dir runs/sims-3b --tp 2 --pp 2
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from megatron_slm.console import error
from megatron_slm.vocab import DEFAULT_NUM_UNITS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    a = sub.add_parser("hf-to-mcore", help="HF model -> Megatron run dir with the speech vocabulary")
    a.add_argument("--hf-dir", required=True, help="HF model directory (config.json + *.safetensors + tokenizer), "
                   "or a .gguf file (dequantised through transformers; needs pip install .[weights])")
    a.add_argument("--out", required=True, help="output run directory (must not exist unless --force)")
    a.add_argument("--tp", type=int, default=1, help="tensor parallel size you will train with (checks splits, "
                   "pads the vocabulary to 128 x TP); the checkpoint itself loads with any TP/PP")
    a.add_argument("--pp", type=int, default=1, help="pipeline parallel size you will train with (checks layers)")
    a.add_argument("--num-units", type=int, default=None,
                   help=f"k-means speech units K (default: the K an already-extended tokenizer holds, else "
                        f"{DEFAULT_NUM_UNITS})")
    a.add_argument("--units-meta", default=None,
                   help="the sidecar of the units you will train on (units/x.jsonl.meta.json, or the units file): "
                        "its tokenizer's K x n_q units, each codebook its own id range after the text ids")
    a.add_argument("--init", choices=("mean", "normal", "zero"), default="mean",
                   help="new rows: mean of the text rows (default), normal with their std, or zero")
    a.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), help="stored dtype (default: the HF model's)")
    a.add_argument("--tokenizer", help="base tokenizer dir (default: --hf-dir)")
    a.add_argument("--make-vocab-size-divisible-by", type=int, default=128, help="vocabulary padding unit (x TP)")
    a.add_argument("--seed", type=int, default=1234, help="seed for --init normal")
    a.add_argument("--force", action="store_true", help="replace --out if it exists")

    b = sub.add_parser("mcore-to-hf", help="Megatron checkpoint -> HF safetensors model")
    b.add_argument("--mcore-dir", required=True, help="run directory (with latest_checkpointed_iteration.txt)")
    b.add_argument("--out", required=True, help="output HF directory (must not exist unless --force)")
    b.add_argument("--iteration", type=int, help="iteration to export (default: latest)")
    b.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), help="output dtype (default: as stored)")
    b.add_argument("--tokenizer", help="tokenizer dir (default: <mcore-dir>/tokenizer)")
    b.add_argument("--max-shard-size", default="2GB", help="safetensors shard size (bounds memory; default 2GB)")
    b.add_argument("--force", action="store_true", help="replace --out if it exists")

    c = sub.add_parser("verify", help="compare Megatron and HF logits on the same tokens")
    c.add_argument("--hf-dir", required=True, help="HF model directory")
    c.add_argument("--mcore-dir", required=True, help="Megatron run directory")
    c.add_argument("--iteration", type=int, help="iteration (default: latest)")
    c.add_argument("--tp", type=int, default=1, help="tensor parallel size to run Megatron with")
    c.add_argument("--pp", type=int, default=1, help="pipeline parallel size to run Megatron with")
    c.add_argument("--batch-size", type=int, default=2, help="sequences in the test batch")
    c.add_argument("--seq-length", type=int, default=32, help="tokens per sequence")
    c.add_argument("--seed", type=int, default=0, help="seed of the random token batch")
    c.add_argument("--tolerance", type=float, default=None,
                   help="max |logit diff| allowed (default: max(1e-4, 8 x fp32 eps x layers x max |logit|), "
                        "see docs/checkpoints.md)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)

    from megatron_slm.convert.families import ConversionError
    from megatron_slm.config import ConfigError
    from megatron_slm.vocab import VocabError

    try:
        if args.command == "hf-to-mcore":
            from megatron_slm.convert.hf_to_mcore import convert_hf_to_mcore

            inventory = None
            if args.units_meta:
                from megatron_slm.units.records import read_inventory

                try:
                    inventory = read_inventory(args.units_meta)
                except (OSError, ValueError) as e:
                    raise ConversionError(f"--units-meta {e}") from None
            summary = convert_hf_to_mcore(args.hf_dir, args.out, tp=args.tp, pp=args.pp, num_units=args.num_units,
                                          init=args.init, dtype=args.dtype, tokenizer_dir=args.tokenizer,
                                          make_vocab_size_divisible_by=args.make_vocab_size_divisible_by,
                                          seed=args.seed, force=args.force, inventory=inventory)
            print("\n".join(summary.lines()))
            return 0
        if args.command == "mcore-to-hf":
            from megatron_slm.convert.mcore_to_hf import convert_mcore_to_hf

            summary = convert_mcore_to_hf(args.mcore_dir, args.out, iteration=args.iteration, dtype=args.dtype,
                                          tokenizer_dir=args.tokenizer, max_shard_size=args.max_shard_size,
                                          force=args.force)
            print("\n".join(summary.lines()))
            return 0
        nproc = args.tp * args.pp
        if nproc > 1 and "WORLD_SIZE" not in os.environ:
            from megatron_slm.runtime.local_ranks import run_local_ranks

            return run_local_ranks([sys.executable, str(Path(__file__).resolve()), *argv], nproc)
        from megatron_slm.convert.verify import verify

        result = verify(args.hf_dir, args.mcore_dir, iteration=args.iteration, tp=args.tp, pp=args.pp,
                        batch_size=args.batch_size, seq_length=args.seq_length, seed=args.seed,
                        tolerance=args.tolerance)
        if int(os.environ.get("RANK", "0")) == 0:
            print(result.line(), flush=True)
        return 0 if result.ok else 1
    except (ConversionError, ConfigError, VocabError) as e:
        error(e)
        return 2


if __name__ == "__main__":
    sys.exit(main())
