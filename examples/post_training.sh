#!/usr/bin/env bash
# Post-training on the CPU, on held-out stories:
#   the demo (story corpus -> units -> short pre-training at TP=2; examples/demo.sh) as the base
#   -> preference pairs from the train stories: true ending vs a continuation sampled from the base
#      (on-policy negatives; NEGATIVES=other-story: another train story's ending)
#   -> DPO at TP=2 (the eval hook scores the test stories during it) -> exports DIR/hf_base, DIR/hf_dpo
#   -> before/after on the test stories, with bootstrap CIs: (a) preference for the true ending over
#      one sampled from the base, (b) spoken StoryCloze, and word-shuffled stories.
#   bash examples/post_training.sh [--out DIR]        (default post_training_out; reruns reuse the base)
# Not yet here: the Auto-BLEU of the models' own continuations.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=post_training_out
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT=$2; shift 2 ;;
    *) echo "usage: bash examples/post_training.sh [--out DIR]" >&2; exit 2 ;;
  esac
done
OUT=${OUT%/}
step() { printf '\n==== %s\n' "$*"; }
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

step "1/5 the base model: the demo on a 0.3 h story corpus (examples/demo.sh)"
if [ ! -f "$OUT/base/hf/config.json" ]; then
  OUT=$OUT/base bash examples/demo.sh
fi
rm -rf "$OUT/hf_base" && cp -r "$OUT/base/hf" "$OUT/hf_base"

NEGATIVES=${NEGATIVES:-sampled}
SAMPLED=(); [ "$NEGATIVES" = sampled ] && SAMPLED=(--negatives sampled --hf-dir "$OUT/hf_base")
step "2/5 preference pairs from the train stories: prompt = all but the last sentence, chosen = its ending, rejected: $NEGATIVES"
python tools/make_preference_data.py --stories "$OUT/base/stories" --units "$OUT/base/units.jsonl" \
  --out "$OUT/pref/train.jsonl" "${SAMPLED[@]}"
# (a)'s items: the held-out test stories, the true ending vs one sampled from the base (evaluation only)
python tools/make_preference_data.py --stories "$OUT/base/stories" --units "$OUT/base/units.jsonl" \
  --split test --eval-items --negatives sampled --hf-dir "$OUT/hf_base" --seed 1 --out "$OUT/eval/pref_sampled.jsonl"
python tools/preprocess_data.py preference --tokenizer "$OUT/base/run/tokenizer" --input "$OUT/pref/train.jsonl" \
  --out-prefix "$OUT/data/pref_train" --max-length 257 --quiet

step "3/5 DPO at TP=2 from the base (reference log-probabilities first, then the steps)"
rm -rf "$OUT/dpo"
torchrun --nproc_per_node=2 pretrain_slm.py --config examples/configs/dpo_tiny_cpu.yaml \
  model.from="$OUT/base/run" checkpoint.save="$OUT/dpo" eval.data="$OUT/base/eval" \
  "data.blend=[{path: $OUT/data/pref_train, kind: preference}]" ${DPO_OVERRIDES:-}

step "4/5 export the DPO model"
python tools/convert_checkpoint.py mcore-to-hf --mcore-dir "$OUT/dpo" --out "$OUT/hf_dpo" --force

step "5/5 before / after on the held-out test stories"
for m in base dpo; do
  python tools/eval_slm.py --hf-dir "$OUT/hf_$m" --items "$OUT/eval/pref_sampled.jsonl" "$OUT/base/eval/ssc.jsonl" \
    "$OUT/base/eval/word_shuffle.jsonl" \
    --out "$OUT/eval_$m.json" --force
done
printf '\nDone.\n  base: %s/hf_base  DPO: %s/hf_dpo\n  reports: %s/eval_base.json, %s/eval_dpo.json\n  DPO metrics: %s/dpo/metrics.jsonl\n' \
  "$OUT" "$OUT" "$OUT" "$OUT" "$OUT"
