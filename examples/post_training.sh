#!/usr/bin/env bash
# Post-training on the CPU, on held-out stories:
#   the demo (story corpus -> units -> short pre-training at TP=2; examples/demo.sh) on a 1.5 h corpus
#   (64 held-out test stories) as the base
#   -> preference pairs from the train stories: true ending vs a continuation sampled from the base
#      (on-policy negatives; NEGATIVES=other-story: another train story's ending)
#   -> DPO at TP=2 (the eval hook scores the test stories during it) -> exports DIR/hf_base, DIR/hf_dpo
#   -> before/after on the test stories, with bootstrap CIs and item counts: (a) preference for the
#      true ending over one sampled from the base, (b) spoken StoryCloze, word-shuffled stories, and
#      (c) the repetition of the models' own continuations of the test-story prompts (seed 0):
#      unit-level Auto-BLEU of the speech continuations, word-level Auto-BLEU of text continuations.
#   bash examples/post_training.sh [--out DIR]        (default post_training_out; reruns reuse the base)
#   HOURS=... sizes the corpus (default 1.5); a base made with other hours is rebuilt.
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
HOURS=${HOURS:-1.5}
step() { printf '\n==== %s\n' "$*"; }
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

step "1/5 the base model: the demo on a $HOURS h story corpus (examples/demo.sh)"
base_hours() { python -c "import json,sys; print(json.load(open(sys.argv[1]))['params']['hours'])" "$OUT/base/stories/manifest.json" 2>/dev/null || true; }
if [ ! -f "$OUT/base/hf/config.json" ] || [ "$(base_hours)" != "$(python -c "print(float('$HOURS'))")" ]; then
  rm -rf "$OUT/base"
  OUT=$OUT/base DEMO_HOURS=$HOURS bash examples/demo.sh
fi
rm -rf "$OUT/hf_base" && cp -r "$OUT/base/hf" "$OUT/hf_base"

NEGATIVES=${NEGATIVES:-sampled}
SAMPLED=(); [ "$NEGATIVES" = sampled ] && SAMPLED=(--negatives sampled --hf-dir "$OUT/hf_base")
step "2/5 preference pairs from the train stories: prompt = all but the last sentence, chosen = its ending, rejected: $NEGATIVES"
python tools/make_preference_data.py --stories "$OUT/base/stories" --units "$OUT/base/units.jsonl" \
  --out "$OUT/pref/train.jsonl" "${SAMPLED[@]}"
# (a)'s items: the held-out test stories, the true ending vs one sampled from the base (evaluation only);
# (c)'s prompts: the same test-story prompts, continued by each model
rm -rf "$OUT/eval"
python tools/make_preference_data.py --stories "$OUT/base/stories" --units "$OUT/base/units.jsonl" \
  --split test --eval-items --negatives sampled --hf-dir "$OUT/hf_base" --seed 1 --out "$OUT/eval/pref_sampled.jsonl" \
  --prompts-out "$OUT/eval/gen/autobleu_units.jsonl"
cp "$OUT/eval/gen/autobleu_units.jsonl" "$OUT/eval/gen/autobleu_text.jsonl"
cp "$OUT/eval/gen/autobleu_units.jsonl.meta.json" "$OUT/eval/gen/autobleu_text.jsonl.meta.json"
# SlamKit's repetition filter (its DPO data config): keep a pair iff Auto-BLEU(prompt_text + chosen_text) < 0.3
python tools/preprocess_data.py preference --tokenizer "$OUT/base/run/tokenizer" --input "$OUT/pref/train.jsonl" \
  --out-prefix "$OUT/data/pref_train" --max-length 257 --max-auto-bleu 0.3 --auto-bleu-n 2 --word-tokenizer nltk --quiet

step "3/5 DPO at TP=2 from the base (reference log-probabilities first, then the steps)"
rm -rf "$OUT/dpo"
torchrun --nproc_per_node=2 pretrain_slm.py --config examples/configs/dpo_tiny_cpu.yaml \
  model.from="$OUT/base/run" checkpoint.save="$OUT/dpo" eval.data="$OUT/base/eval" \
  "data.blend=[{path: $OUT/data/pref_train, kind: preference}]" ${DPO_OVERRIDES:-}

step "4/5 export the DPO model"
python tools/convert_checkpoint.py mcore-to-hf --mcore-dir "$OUT/dpo" --out "$OUT/hf_dpo" --force

step "5/5 before / after on the held-out test stories"
for m in base dpo; do
  # (c): SlamKit's sampling (T 0.8, top-k 25, 150 new tokens), seed 0, the same for both models
  python tools/eval_slm.py --hf-dir "$OUT/hf_$m" --items "$OUT/eval/pref_sampled.jsonl" "$OUT/base/eval/ssc.jsonl" \
    "$OUT/base/eval/word_shuffle.jsonl" --tasks autobleu_units,autobleu_text --data "$OUT/eval/gen" --seed 0 \
    --word-tokenizer nltk --out "$OUT/eval_$m.json" --item-scores "$OUT/eval_${m}_items.jsonl" --force
done
python - "$OUT" <<'EOF'
import json, sys
from megatron_slm.eval.generative import length_matched_unit_autobleu
out = sys.argv[1]
models = ("base", "dpo")
reports = {m: json.load(open(f"{out}/eval_{m}.json"))["tasks"] for m in models}
rows = {m: [r for r in map(json.loads, open(f"{out}/eval_{m}_items.jsonl")) if r.get("task") == "autobleu_units"]
        for m in models}
cell = lambda v, ci, n: f"{v:.3f} [{ci[0]:.3f}, {ci[1]:.3f}] n={n}"
print(f"\n{'on the held-out test stories':50s} {'base':>27s} {'DPO':>27s}")
for label, task, key in (("(a) true ending over a base sample (higher better)", "pref_sampled", "accuracy"),
                         ("(b) spoken StoryCloze (higher better)", "ssc", "accuracy"),
                         ("    word-shuffled stories (higher better)", "word_shuffle", "accuracy"),
                         ("(c) unit-level Auto-BLEU, speech (lower better)", "autobleu_units", "value"),
                         ("    word-level Auto-BLEU, text (lower better)", "autobleu_text", "value")):
    e = [reports[m][task] for m in models]
    print(f"{label:50s} " + " ".join(f"{cell(x[key], x['ci95'], x['n']):>27s}" for x in e))
    if "generated" in e[0]:  # Auto-BLEU falls with length: how long the continuations are, and why they stopped
        g = [x["generated"] for x in e]
        print(f"{'      new tokens per continuation (mean)':50s} " + " ".join(f"{x['mean_new_tokens']:>27.1f}" for x in g))
        print("      stops: " + " | ".join(f"{name}: " + ", ".join(f"{k} {v}" for k, v in x["stops"].items())
                                         for name, x in zip(("base", "DPO"), g)))
m = length_matched_unit_autobleu(rows["base"], rows["dpo"])
print(f"{'    unit-level, each pair cut to the shorter':50s} {cell(m['a']['value'], m['a']['ci95'], m['a']['n']):>27s} "
      f"{cell(m['b']['value'], m['b']['ci95'], m['b']['n']):>27s}")
d = m["b_minus_a"]
print(f"{'    DPO - base at equal length':50s} {'':>27s} {cell(d['value'], d['ci95'], d['n']):>27s}")
a0, a1 = reports["base"]["pref_sampled"]["accuracy"], reports["dpo"]["pref_sampled"]["accuracy"]
if a0 < 1:
    print(f"(a): DPO closes {(a1 - a0) / (1 - a0):.2f} of the base's distance to 1.0 ({a0:.3f} -> {a1:.3f})")
print("(c): each model continues the test stories' prompts (all sentences but the last) with SlamKit's sampling\n"
      "     (T 0.8, top-k 25, at most 150 new tokens), seed 0. Unit-level: repeated unit bigrams in the generated unit\n"
      "     sequence (no ASR model here, so not SlamKit's word-level Auto-BLEU of transcripts). Auto-BLEU falls with\n"
      "     length: compare the equal-length rows when the new-token counts differ. Text: the models' text\n"
      "     continuations of the same speech prompts (NLTK words, as SlamKit).")
json.dump({"reports": {m: f"{out}/eval_{m}.json" for m in models}, "unit_autobleu_length_matched": m},
          open(f"{out}/post_training_summary.json", "w"), indent=2)
EOF
printf '\nDone.\n  base: %s/hf_base  DPO: %s/hf_dpo\n  reports: %s/eval_{base,dpo}.json (+ _items.jsonl), %s/post_training_summary.json\n  DPO metrics: %s/dpo/metrics.jsonl\n' \
  "$OUT" "$OUT" "$OUT" "$OUT" "$OUT"
