#!/usr/bin/env bash
# The whole pipeline on the bundled corpus, on the CPU, in a few minutes:
#   audio -> units -> extended-vocabulary checkpoint -> interleaved datasets -> TP=2 training
#   -> Hugging Face export -> spoken-LM evaluation.
# Everything lands in demo_out/ (OUT=... to change; delete it to start over).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-demo_out}
C=examples/data/tiny_corpus
TOK=examples/tokenizer/tiny-bpe
step() { printf '\n==== %s\n' "$*"; }
if [ "$OUT" != demo_out ]; then
  echo "OUT=$OUT: examples/configs/demo_cpu.yaml reads demo_out/; paths are overridden below"
fi

step "1/7 audio -> speech units (DALI decoding, log-mel features, the corpus k-means, K=100)"
python tools/extract_units.py --alignments $C/alignments.jsonl --extractor mel \
  --kmeans $C/km_mel100.npy --out $OUT/units.jsonl

step "2/7 a tiny base text LM (stand-in for Llama-3.2) -> Megatron checkpoint with 100 unit tokens"
python tools/make_tiny_hf_model.py --tokenizer $TOK --out $OUT/base-hf
python tools/convert_checkpoint.py hf-to-mcore --hf-dir $OUT/base-hf --out $OUT/ckpt --tp 2 \
  --num-units 100 --force

step "3/7 datasets: interleaved (dynamic), speech-only, text-only"
python tools/preprocess_data.py interleaved --mode dynamic --tokenizer $OUT/ckpt/tokenizer \
  --units $OUT/units.jsonl --alignments $C/alignments.jsonl --out-prefix $OUT/data/inter
python tools/preprocess_data.py speech --tokenizer $OUT/ckpt/tokenizer --units $OUT/units.jsonl \
  --out-prefix $OUT/data/speech
python tools/preprocess_data.py text --tokenizer $OUT/ckpt/tokenizer --input $C/alignments.jsonl \
  --text-key text --out-prefix $OUT/data/text

step "4/7 a spoken-LM benchmark from the corpus: real utterances vs word-shuffled ones"
python tools/prepare_eval_data.py word-shuffle --alignments $C/alignments.jsonl \
  --units-file $OUT/units.jsonl --out $OUT/eval/word_shuffle.jsonl

step "5/7 train with tensor parallelism 2 on the CPU (gloo), scoring the benchmark every 100 steps"
rm -rf $OUT/run
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} torchrun --nproc_per_node=2 pretrain_slm.py --config examples/configs/demo_cpu.yaml \
  model.from=$OUT/ckpt checkpoint.save=$OUT/run \
  "data.blend=[{path: $OUT/data/text, weight: 0.2024, kind: text},{path: $OUT/data/inter, weight: 0.5433, kind: interleaved},{path: $OUT/data/speech, weight: 0.2543, kind: speech}]" \
  eval.data=$OUT/eval ${DEMO_TRAIN_OVERRIDES:-}

step "6/7 export the trained model to Hugging Face"
python tools/convert_checkpoint.py mcore-to-hf --mcore-dir $OUT/run --out $OUT/hf --force

step "7/7 evaluate the exported model"
python tools/eval_slm.py --hf-dir $OUT/hf --items $OUT/eval/word_shuffle.jsonl --out $OUT/eval_report.json

step "+ listen: a speech continuation of a corpus prompt (Griffin-Lim WAV) and a text continuation of a speech prompt"
GEN=(--hf-dir $OUT/hf --prompt-units $OUT/units.jsonl --prompt-seconds 3 --alignments $C/alignments.jsonl
     --ids s01_01 --show 1 --force)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # a tiny model: threads only contend
python tools/generate.py "${GEN[@]}" --output-modality speech --vocoder $OUT/units.jsonl --wav-with-prompt \
  --out $OUT/gen/speech.jsonl --wav-dir $OUT/gen/wav
python tools/generate.py "${GEN[@]}" --output-modality text --max-new-tokens 40 --out $OUT/gen/s2t.jsonl

printf '\nDone.\n  HF model:     %s/hf\n  eval report:  %s/eval_report.json\n  metrics:      %s/run/metrics.jsonl (TensorBoard: %s/run/tensorboard)\n' \
  "$OUT" "$OUT" "$OUT" "$OUT"
