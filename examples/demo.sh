#!/usr/bin/env bash
# The whole pipeline on the CPU, in a few minutes, on a small spoken story corpus made here
# (tools/make_story_corpus.py, espeak-ng; cached in $OUT/stories):
#   audio -> units -> extended-vocabulary checkpoint -> interleaved datasets -> TP=2 training
#   -> Hugging Face export -> spoken-LM evaluation on held-out test stories.
# Everything lands in demo_out/ (OUT=... to change; delete it to start over).
# DEMO_HOURS (default 0.3) and DEMO_TEST_FRACTION (default 0.2) size the corpus and its test split
# (examples/post_training.sh makes a larger one).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-demo_out}
C=examples/data/tiny_corpus  # its k-means: fitted to the same espeak-ng voice the story corpus uses
S=$OUT/stories
TOK=examples/tokenizer/tiny-bpe
step() { printf '\n==== %s\n' "$*"; }
if [ "$OUT" != demo_out ]; then
  echo "OUT=$OUT: examples/configs/demo_cpu.yaml reads demo_out/; paths are overridden below"
fi

HOURS=${DEMO_HOURS:-0.3}
TEST_FRACTION=${DEMO_TEST_FRACTION:-0.2}
step "1/7 a spoken story corpus ($HOURS h, split by story), audio -> speech units (DALI decoding, log-mel, K=100)"
python tools/make_story_corpus.py --out $S --hours $HOURS --voices 1 --test-fraction $TEST_FRACTION --text-stories 0 --quiet
SPLIT=$(python -c "import json,sys; print(json.load(open(sys.argv[1]))['data_split'])" $S/manifest.json)
python tools/extract_units.py --alignments $S/alignments.jsonl --extractor mel \
  --kmeans $C/km_mel100.npy --out $OUT/units.jsonl

step "2/7 a tiny base text LM (stand-in for Llama-3.2) -> Megatron checkpoint with 100 unit tokens"
python tools/make_tiny_hf_model.py --tokenizer $TOK --out $OUT/base-hf
python tools/convert_checkpoint.py hf-to-mcore --hf-dir $OUT/base-hf --out $OUT/ckpt --tp 2 \
  --num-units 100 --force

step "3/7 datasets: interleaved (dynamic), speech-only, text-only"
python tools/preprocess_data.py interleaved --mode dynamic --tokenizer $OUT/ckpt/tokenizer \
  --units $OUT/units.jsonl --alignments $S/alignments.jsonl --out-prefix $OUT/data/inter
python tools/preprocess_data.py speech --tokenizer $OUT/ckpt/tokenizer --units $OUT/units.jsonl \
  --out-prefix $OUT/data/speech
python tools/preprocess_data.py text --tokenizer $OUT/ckpt/tokenizer --input $S/alignments.jsonl \
  --text-key text --out-prefix $OUT/data/text

step "4/7 spoken-LM benchmarks from the held-out test stories: word-shuffled stories, spoken StoryCloze"
python tools/extract_units.py --alignments $S/alignments.test.jsonl --extractor mel \
  --kmeans $C/km_mel100.npy --out $OUT/units.test.jsonl
python tools/prepare_eval_data.py word-shuffle --alignments $S/alignments.test.jsonl \
  --units-file $OUT/units.test.jsonl --out $OUT/eval/word_shuffle.jsonl
python tools/prepare_eval_data.py ssc --src $S/ssc --units-from mel --kmeans $C/km_mel100.npy \
  --out $OUT/eval/ssc.jsonl --no-progress

step "5/7 train with tensor parallelism 2 on the CPU (gloo) on the train stories, scoring the benchmarks every 100 steps"
rm -rf $OUT/run
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} torchrun --nproc_per_node=2 pretrain_slm.py --config examples/configs/demo_cpu.yaml \
  model.from=$OUT/ckpt checkpoint.save=$OUT/run \
  "data.blend=[{path: $OUT/data/text, weight: 0.2024, kind: text},{path: $OUT/data/inter, weight: 0.5433, kind: interleaved},{path: $OUT/data/speech, weight: 0.2543, kind: speech}]" \
  data.split=$SPLIT eval.data=$OUT/eval ${DEMO_TRAIN_OVERRIDES:-}

step "6/7 export the trained model to Hugging Face"
python tools/convert_checkpoint.py mcore-to-hf --mcore-dir $OUT/run --out $OUT/hf --force

step "7/7 evaluate the exported model"
python tools/eval_slm.py --hf-dir $OUT/hf --items $OUT/eval/word_shuffle.jsonl $OUT/eval/ssc.jsonl \
  --out $OUT/eval_report.json --force

step "+ listen: a speech continuation of a corpus prompt (Griffin-Lim WAV) and a text continuation of a speech prompt"
PROMPT_ID=$(python -c "import json,sys; print(json.loads(open(sys.argv[1]).readline())['id'])" $S/alignments.test.jsonl)
GEN=(--hf-dir $OUT/hf --prompt-units $OUT/units.jsonl --prompt-seconds 3 --alignments $S/alignments.jsonl
     --ids $PROMPT_ID --show 1 --force)
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}  # a tiny model: threads only contend
python tools/generate.py "${GEN[@]}" --output-modality speech --vocoder $OUT/units.jsonl --wav-with-prompt \
  --out $OUT/gen/speech.jsonl --wav-dir $OUT/gen/wav
python tools/generate.py "${GEN[@]}" --output-modality text --max-new-tokens 40 --out $OUT/gen/s2t.jsonl

printf '\nDone.\n  HF model:     %s/hf\n  eval report:  %s/eval_report.json\n  metrics:      %s/run/metrics.jsonl (TensorBoard: %s/run/tensorboard)\n' \
  "$OUT" "$OUT" "$OUT" "$OUT"
