#!/usr/bin/env bash
# The SIMS study in miniature, on a CPU: do interleaved speech-text LMs initialised from a text
# LM scale better than textless ones? One command, resumable (run it again after a kill):
#
#   spoken story corpus (espeak-ng) -> mel units (a k-means fitted on the train split)
#   -> datasets -> tiny text LMs pre-trained on the stories' text, converted with the speech vocabulary
#   -> tools/scaling.py plan: isoFLOP sets at 3 budgets for three arms at matched compute
#        text-init:     interleaved (text + interleaved + speech), initialised from the text LM
#        inter-scratch: the same blend from random weights
#        textless:      speech only, from random weights
#   -> every run through tools/launch.py (two at a time), scored at its end on held-out test stories
#      (word-shuffle, and a spoken StoryCloze: the story's ending vs another story's)
#   -> collect, fit (approach 2 and 3, bootstrap CIs), plot, REPORT.md
#
#   bash examples/mini_study.sh [--out DIR] [--tiny] [--jobs N]
#     --out DIR   where everything goes (default <repo>/mini_study_out; no spaces)
#     --tiny      a few-minute version (tiny corpus, 3 sizes, 2 budgets): checks the pipeline, not the science
#     --jobs N    runs trained at once (default 2: one per core)
set -euo pipefail
REPO_DIR=$(cd "$(dirname "$0")/.." && pwd)
OUT=$REPO_DIR/mini_study_out
TINY=0
JOBS=2
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT=$2; shift 2 ;;
    --tiny) TINY=1; shift ;;
    --jobs) JOBS=$2; shift 2 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$OUT" in *" "*) echo "error: --out must not contain spaces" >&2; exit 2 ;; esac
OUT=$(realpath -m "$OUT")  # relative to where the script was started
cd "$REPO_DIR"

if [ "$TINY" = 1 ]; then
  HOURS=0.25 VOICES=1 KM_FRAMES=20000 TEXT_STORIES=1500 TEXT_TOKENS=40000 BOOTSTRAP=100 MIN_STEPS=2 MIN_TPP=0.01
  PRESETS=micro-2x32,micro-2x48,micro-3x64 BUDGETS=4e9,1.2e10
else
  HOURS=3 VOICES=3 KM_FRAMES=200000 TEXT_STORIES=20000 TEXT_TOKENS=600000 BOOTSTRAP=1000 MIN_STEPS=15 MIN_TPP=0.1
  PRESETS=micro-2x16,micro-2x32,micro-2x48,micro-3x64,micro-4x80,micro-4x96 BUDGETS=6e10,2e11,6e11
fi
ARMS="text-init inter-scratch textless"
TOK=examples/tokenizer/tiny-bpe
K=100
C=$OUT/corpus
# One thread per process (two processes share two cores). No torch.compile on the CPU path (every
# fusion is off there), so skipping TorchDynamo's set-up saves ~3 s of CPU per process.
export OMP_NUM_THREADS=1 TORCHDYNAMO_DISABLE=1 PYTHONWARNINGS=ignore
mkdir -p "$OUT/logs"
START=$(date +%s)
LAST=$START
touch "$OUT/timings.tsv"  # every invocation appends; a step's time is the one of the invocation that did it
step() {
  local now; now=$(date +%s)
  [ -n "${STEP:-}" ] && printf '%s\t%s\n' "$STEP" $((now - LAST)) >> "$OUT/timings.tsv"
  LAST=$now STEP=$1
  printf '\n==== %s  (%ss so far)\n' "$1" $((now - START))
}

# One training run through the launcher, logged to logs/NAME.log. A run that finished under this
# script (logs/NAME.done, and its checkpoint still there) is not even relaunched; the launcher
# itself also returns at once for a finished run.
train_job() {
  local name=$1 save=$2; shift 2
  if [ -f "$OUT/logs/$name.done" ] && [ -f "$save/latest_checkpointed_iteration.txt" ]; then
    echo "  $name: finished earlier"; return 0
  fi
  if python tools/launch.py --nproc-per-node 1 "$@" > "$OUT/logs/$name.log" 2>&1; then
    touch "$OUT/logs/$name.done"
    echo "  $name: $(grep -a -o -m1 '\[done\] [0-9]* steps in [0-9.]*s\|nothing to do' "$OUT/logs/$name.log")"
  else
    echo "  FAILED $name: see $OUT/logs/$name.log"; return 1
  fi
}
export -f train_job
export OUT
run_jobs() {  # each line of $1 is a bash command; $JOBS at a time; fails if any failed
  xargs -r -d '\n' -P "$JOBS" -n 1 bash -c < "$1" || { echo "error: some runs failed (rerun to resume)" >&2; exit 1; }
}

step "1/8 spoken story corpus (${HOURS} h, espeak-ng, exact word alignments; cached)"
python tools/make_story_corpus.py --out "$C" --hours "$HOURS" --voices $VOICES --text-stories "$TEXT_STORIES" --quiet
SPLIT=$(python -c "import json,sys; print(json.load(open(sys.argv[1]))['data_split'])" "$C/manifest.json")
D=$OUT/data E=$OUT/eval T=$OUT/textlm J=$OUT/jobs
mkdir -p "$J" "$T/eval"
prep() {  # a dataset, unless it is there (an .idx only exists for a complete one)
  local prefix=$1 log=$OUT/logs/preprocess-$(basename "$1").log; shift
  [ -f "$prefix.idx" ] && return 0
  python tools/preprocess_data.py "$@" --tokenizer $TOK --num-units $K --out-prefix "$prefix" --quiet > "$log"
  grep -a '^wrote' "$log" | sed 's/^/  /'
}

step "2/8 in the background: text LMs, one per size, pre-trained on ${TEXT_TOKENS} tokens of text-only stories, then converted with the speech vocabulary"
for P in ${PRESETS//,/ }; do
  printf 'train_job textlm-%s %s --config examples/configs/mini_study.yaml model.preset=%s checkpoint.save=%s data.tokenizer=%s data.split=98,1,1 "data.blend=[{path: %s, kind: text, name: textlm}]" train.iters=null train.token_budget=%s "eval.tasks=[]"\n' \
    "$P" "$T/runs/$P" "$P" "$T/runs/$P" "$TOK" "$D/textlm" "$TEXT_TOKENS"
done > "$J/textlm.jobs"
# The export's tokenizer already holds the units (training extends it), so hf-to-mcore gets the base
# tokenizer: the unit rows start again from the mean text row, as when SIMS extends a released text LM.
for P in ${PRESETS//,/ }; do
  printf '[ -f %s ] || { %s > %s 2>&1 && %s >> %s 2>&1 && echo "  converted %s"; }\n' "$OUT/ckpt/$P/slm_model.json" \
    "python tools/convert_checkpoint.py mcore-to-hf --mcore-dir $T/runs/$P --out $T/hf/$P --force" "$OUT/logs/convert-$P.log" \
    "python tools/convert_checkpoint.py hf-to-mcore --hf-dir $T/hf/$P --tokenizer $TOK --num-units $K --out $OUT/ckpt/$P --force" \
    "$OUT/logs/convert-$P.log" "$P"
done > "$J/convert.jobs"
( prep "$D/textlm" text --input "$C/text_stories.jsonl" --text-key text && run_jobs "$J/textlm.jobs" \
  && run_jobs "$J/convert.jobs" ) &
TEXT_LANE=$!
trap 'wait' EXIT  # if a later step fails, let the lane finish rather than leave it writing on its own

step "3/8 speech units: mel features, a K=$K k-means fitted on the train split only"
[ -f "$OUT/units/km_mel$K.npy" ] || python tools/train_kmeans.py --alignments "$C/alignments.train.jsonl" \
  --extractor mel --k $K --max-frames $KM_FRAMES --out "$OUT/units/km_mel$K.npy" 2> "$OUT/logs/kmeans.log" | sed 's/^/  /'
python tools/extract_units.py --alignments "$C/alignments.jsonl" --extractor mel --kmeans "$OUT/units/km_mel$K.npy" \
  --out "$OUT/units/units.jsonl" 2> "$OUT/logs/units.log" | tail -1 | sed 's/^/  /'

step "4/8 datasets from the spoken stories: text, interleaved (dynamic), speech (data.split=$SPLIT: train, valid, test stories)"
prep "$D/text" text --input "$C/alignments.jsonl" --text-key text
prep "$D/inter" interleaved --mode dynamic --units "$OUT/units/units.jsonl" --alignments "$C/alignments.jsonl"
prep "$D/speech" speech --units "$OUT/units/units.jsonl"

step "5/8 held-out benchmarks from the test stories: word-shuffle and spoken StoryCloze"
[ -f "$E/word_shuffle.jsonl" ] || { python tools/extract_units.py --alignments "$C/alignments.test.jsonl" --extractor mel \
  --kmeans "$OUT/units/km_mel$K.npy" --out "$OUT/units/units.test.jsonl" > /dev/null 2>&1 \
  && python tools/prepare_eval_data.py word-shuffle --units-file "$OUT/units/units.test.jsonl" \
  --alignments "$C/alignments.test.jsonl" --out "$E/word_shuffle.jsonl" > "$OUT/logs/eval-word_shuffle.log" 2>&1; }
[ -f "$E/ssc.jsonl" ] || python tools/prepare_eval_data.py ssc --src "$C/ssc" --units-from mel \
  --kmeans "$OUT/units/km_mel$K.npy" --out "$E/ssc.jsonl" --no-progress > "$OUT/logs/eval-ssc.log" 2>&1
cat "$OUT"/logs/eval-*.log 2>/dev/null | grep -a '^wrote' | sed 's/^/  /' || true
wait $TEXT_LANE || { echo "error: the text-LM lane failed (see $OUT/logs/textlm-*.log, convert-*.log)" >&2; exit 1; }
for P in ${PRESETS//,/ }; do  # how well each text LM knows the stories: the StoryCloze items as text
  [ "$TINY" = 1 ] || [ -f "$T/eval/$P.json" ] || echo "python tools/eval_slm.py --mcore-dir $OUT/ckpt/$P --items $E/ssc.jsonl \
--prefer text --bootstrap 200 --out $T/eval/$P.json > $OUT/logs/textlm-eval-$P.log 2>&1"
done > "$J/textlm-eval.jobs"
run_jobs "$J/textlm-eval.jobs"

step "6/8 plan the isoFLOP sweep: budgets $BUDGETS, sizes $PRESETS, three arms"
SIMS_BLEND="[{path: $D/text, weight: 0.2024, kind: text, name: text}, {path: $D/inter, weight: 0.5433, kind: interleaved, name: inter}, {path: $D/speech, weight: 0.2543, kind: speech, name: speech}]"
SPEECH_BLEND="[{path: $D/speech, weight: 1.0, kind: speech, name: speech}]"
plan_arm() {
  local arm=$1 blend=$SIMS_BLEND init=()
  [ "$arm" = textless ] && blend=$SPEECH_BLEND
  [ "$arm" = text-init ] && init=(--init-from "$OUT/ckpt/{preset}")
  python tools/scaling.py plan --presets "$PRESETS" --sizes presets --budgets "$BUDGETS" "${init[@]}" \
    --base-config examples/configs/mini_study.yaml --set data.tokenizer=$TOK --set "data.blend=$blend" \
    --set data.split="$SPLIT" --set eval.data="$E" --min-steps $MIN_STEPS --min-tokens-per-param $MIN_TPP \
    --max-tokens-per-param 200 --gpus-per-node 0 --out "$OUT/arms/$arm" > "$OUT/logs/plan-$arm.log" \
    || { echo "  FAILED: $OUT/logs/plan-$arm.log"; return 1; }
  grep -E "^planned|skipped " "$OUT/logs/plan-$arm.log" | sed "s/^/  $arm: /"
}
# collect -> fit -> plot for one arm; the loss every arm has: the validation stories' speech-only documents
post_arm() {
  local a=$OUT/arms/$1
  python tools/scaling.py collect --runs "$a/runs/*" --plan "$a/plan.csv" --out "$a/results.csv" > "$OUT/logs/collect-$1.log" 2>&1 \
  && python tools/scaling.py fit --runs "$a/results.csv" --loss-column speech/lm_loss --bootstrap $BOOTSTRAP \
       --out "$a/fit.json" > "$OUT/logs/fit-$1.log" 2>&1 \
  && python tools/scaling.py plot --runs "$a/results.csv" --fit "$a/fit.json" --compare textless --out "$a/plots" \
       > "$OUT/logs/plot-$1.log" 2>&1 \
  && echo "  $1: $(grep -a -m1 '^approach 3' "$OUT/logs/fit-$1.log")" || { echo "  FAILED $1: see $OUT/logs/*-$1.log"; return 1; }
}
export -f plan_arm post_arm
export SIMS_BLEND SPEECH_BLEND PRESETS BUDGETS TOK SPLIT E MIN_STEPS MIN_TPP BOOTSTRAP
for ARM in $ARMS; do echo "plan_arm $ARM"; done > "$J/plan.jobs"
run_jobs "$J/plan.jobs"
for ARM in $ARMS; do
  tail -n +2 "$OUT/arms/$ARM/plan.csv" | tr -d '\r' | awk -F, -v arm=$ARM '{print $2 "\t" arm "-" $1 "\t" $15 "\t" $14}'
done | sort -t$'\t' -k1,1gr -k2,2 | awk -F'\t' '{print "train_job " $2 " " $3 " --config " $4}' > "$J/runs.jobs"
# (the largest budgets first, arms interleaved: the two workers finish together)

step "7/8 train $(wc -l < "$J/runs.jobs") runs, $JOBS at a time (a finished run returns at once)"
run_jobs "$J/runs.jobs"

step "8/8 collect, fit (approach 2 + 3, $BOOTSTRAP bootstrap samples), plot, report"
for ARM in $ARMS; do echo "post_arm $ARM"; done > "$J/post.jobs"
run_jobs "$J/post.jobs"

NOW=$(date +%s)
printf '%s\t%s\n' "$STEP" $((NOW - LAST)) >> "$OUT/timings.tsv"
python - "$OUT" "$C/manifest.json" "$TINY" "$PRESETS" "$BUDGETS" "$TEXT_TOKENS" $((NOW - START)) > "$OUT/notes.md" <<'EOF'
import json, sys
from pathlib import Path
out, manifest, tiny, presets, budgets, text_tokens, wall = sys.argv[1:]
m = json.loads(Path(manifest).read_text())
h = {s: m["seconds"][s] / 3600 for s in m["seconds"]}
steps: dict = {}  # step -> its longest time over invocations (a skipped step takes ~0 s)
for line in Path(out, "timings.tsv").read_text().splitlines():
    if line.strip():
        name, seconds = line.rsplit("\t", 1)
        steps[name] = max(steps.get(name, 0), int(seconds))
total = sum(steps.values())
acc = {}
for p in presets.split(","):
    f = Path(out, "textlm", "eval", f"{p}.json")
    if f.is_file():
        acc[p] = json.loads(f.read_text())["tasks"]["ssc"]["accuracy"]
print(f"""{'**`--tiny` run: a pipeline check, its numbers mean nothing.**' if tiny == '1' else ''}

Produced by `bash examples/mini_study.sh{' --tiny' if tiny == '1' else ''}` in **{total // 60} min {total % 60} s**
of wall time on this machine: the sum of its steps, each timed in the invocation that did it
(this invocation: {int(wall) // 60} min {int(wall) % 60} s; steps done by an earlier one are skipped).

**Setup.** Corpus: {sum(m['stories'].values())} generated stories spoken by espeak-ng ({len(m['params']['voices'])} rate/pitch variant(s)),
{h['train']:.2f} h train / {h['valid']:.2f} h validation / {h['test']:.2f} h test, split by story
(`tools/make_story_corpus.py`, content sha256 `{m['content_sha256'][:16]}`). Units: 40-band log-mel
at 25 Hz, k-means K=100 fitted on the train split. Model sizes: {presets.replace(',', ', ')}
(`--sizes presets`, the same sizes in every arm); budgets C = {budgets.replace(',', ', ')} FLOPs (C = 6ND).
Arms: **text-init** = SIMS blend (text 0.2024, interleaved 0.5433, speech 0.2543) from a text LM of the
same size pre-trained on {int(text_tokens):,} tokens of text-only stories (never a validation or test
story), converted with `hf-to-mcore`; **inter-scratch** = the same blend from random weights;
**textless** = speech only from random weights. Fitted loss: `speech/lm_loss`, the validation loss on
the held-out validation stories' speech-only documents (the same tokens for every run). Benchmarks, scored
once at the end of every run on the {m['stories']['test']} test stories: `word_shuffle` (the story's units
vs its words' units shuffled) and `ssc` (spoken StoryCloze: the story with its own last sentence vs the
last sentence of a test story with another hero and plot).
""")
if acc:
    print("Text LMs on the text version of the StoryCloze items (`eval_slm.py --prefer text`): "
          + ", ".join(f"{p} {a:.2f}" for p, a in acc.items()) + ".\n")
print("Wall time per step (s): " + ", ".join(f"{name.split(' ')[0]} {t}" for name, t in steps.items()) + ".\n")
from megatron_slm.corpus.stories import lexicon
from megatron_slm.models.flops import param_counts
from megatron_slm.models.presets import PRESETS

sizes = [param_counts(PRESETS[p].with_speech_units(100)).total for p in presets.split(",")]
cs = [float(c) for c in budgets.split(",")]
print(f"""**Caveats.** This is a toy: models of {min(sizes) / 1e3:.0f}k-{max(sizes) / 1e3:.0f}k parameters, budgets of
{min(cs):.2g}-{max(cs):.2g} FLOPs ({len(cs)} of them), one seed per run, one learning rate for every size, a
synthetic language of {len(lexicon())} words spoken by one synthesiser (every word synthesised once per voice,
so its units barely vary), and a speech corpus small enough that the larger budgets see it for several
epochs. The text LMs' own compute is not counted in the text-init arm's budget (as in SIMS). A few
budgets pin an exponent only loosely: read the bootstrap intervals, not the point estimates. What
transfers to real scale is the procedure, not the numbers.""")
EOF
python tools/scaling.py report --arm text-init="$OUT/arms/text-init" --arm inter-scratch="$OUT/arms/inter-scratch" \
  --arm textless="$OUT/arms/textless" --notes "$OUT/notes.md" --out "$OUT/report/REPORT.md" \
  --title "The SIMS study in miniature$([ "$TINY" = 1 ] && echo ' (--tiny)')"
printf '\nDone in %ss.\n  report:  %s/report/REPORT.md\n  per arm: %s/arms/<arm>/{plan.csv,results.csv,fit.json,plots/}\n' \
  $(( $(date +%s) - START )) "$OUT" "$OUT"
