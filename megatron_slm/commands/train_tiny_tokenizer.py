"""Train the tiny byte-level BPE tokenizer that stands in for the Llama tokenizer in tests and demos.

    python tools/train_tiny_tokenizer.py        # = --out examples/tokenizer/tiny-bpe \
                                                #   --input examples/data/tiny_corpus/stories.txt --vocab-size 512

The result is an HF fast tokenizer directory (`AutoTokenizer.from_pretrained(out)` loads it)
with Llama-style `<s>` (BOS, prepended by default) and `</s>` (EOS) and no pad token. Training
is deterministic for a given input, so the directory can be regenerated bit for bit.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

# A few short English paragraphs so the script also works before the corpus exists.
BUILTIN_TEXT = """\
Once upon a time there was a little girl named Lily. She lived in a small house near the forest with her mother and her dog.
Every morning Lily went outside to play in the garden. She liked to look at the flowers and listen to the birds singing in the trees.
One day a big storm came. The wind was very strong and the rain fell all night. Lily was scared, but her mother held her hand and told her a story.
In the morning the sun was shining again. Lily and her dog ran to the garden. The flowers were wet, but they were still beautiful.
Tom was a happy boy who loved to build things. He made a tall tower with his blocks and showed it to his friend Sam.
Sam wanted to help. Together they built a bridge, a castle and a long road for their toy cars.
When it was time to eat, they put the blocks away and said thank you to each other. They were good friends.
The cat sat on the mat and looked at the moon. It was a quiet night, and the stars were bright above the hills.
A small bird found a shiny stone by the river. It carried the stone back to its nest and showed it to the other birds.
The old man walked slowly down the road. He smiled at the children and gave them apples from his basket.
"""

SPECIAL_TOKENS = ["<s>", "</s>"]
DEFAULT_INPUT = "examples/data/tiny_corpus/stories.txt"


def read_texts(paths: list[str]) -> list[str]:
    texts = [line for line in BUILTIN_TEXT.splitlines() if line.strip()]
    for p in paths:
        path = Path(p)
        if not path.is_file():
            raise SystemExit(f"error: --input {p}: no such file")
        texts += [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip() and not ln.startswith("#")]
    return texts


def train(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    # Llama-style: BOS prepended by `tokenizer(text)`, nothing appended.
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    return tok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="examples/tokenizer/tiny-bpe", help="output tokenizer directory")
    ap.add_argument("--input", action="append", default=None,
                    help=f"UTF-8 text file(s) to train on besides the built-in paragraphs (repeatable; default {DEFAULT_INPUT})")
    ap.add_argument("--vocab-size", type=int, default=512, help="BPE vocabulary size including bytes and specials")
    args = ap.parse_args(argv)

    from transformers import PreTrainedTokenizerFast

    tok = train(read_texts(args.input if args.input is not None else [DEFAULT_INPUT]), args.vocab_size)
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                 model_max_length=131072, clean_up_tokenization_spaces=False)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    hf.save_pretrained(str(out))
    print(f"saved a {len(hf)}-token byte-level BPE tokenizer to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
