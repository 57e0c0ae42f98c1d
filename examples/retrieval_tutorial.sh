#!/usr/bin/env bash
# The retrieval journey of docs/tutorial_retrieval.md, end to end, exactly as the page shows it:
#   split SciFact's queries into a training half and a held-out half -> score the start model ->
#   mine hard negatives for the training half (title + text corpus) -> train MNRL -> score the fine-tune on the
#   held-out half and the other local tasks -> compare (generalization report) -> stage a Hub push (dry run).
#
#   bash examples/retrieval_tutorial.sh                 # small size: 700 distractor abstracts (983 documents)
#   DISTRACTORS=-1 bash examples/retrieval_tutorial.sh  # full SciFact corpus (5,183 abstracts)
#
# Environment: MODEL (start model, default all-MiniLM-L6-v2), MINE_FILTER (default --relative-margin 0.05), DATA (benchmark folder, default ../shared/data), RUN (output folder, default
# runs/retrieval_tutorial), DISTRACTORS, SEED, LOSS (mnrl or gist), EPOCHS, TASKS (the tasks besides the held-out
# half; default the five STS tasks; add Banking77Classification for the full report). Wall times of every step
# go to $RUN/timings.tsv. Nothing downloads: set HF_HUB_OFFLINE=1 on a machine without network.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
RUN=${RUN:-runs/retrieval_tutorial}
DISTRACTORS=${DISTRACTORS:-700}
SEED=${SEED:-42}
LOSS=${LOSS:-mnrl}
EPOCHS=${EPOCHS:-2}
TASKS=${TASKS:-STSBenchmark,SICK-R,STS12,STS13,STS14}
MODEL=${MODEL:-all-MiniLM-L6-v2}
MINE_FILTER=${MINE_FILTER:---relative-margin 0.05}
ET=${EMBEDTRAIN:-embedtrain}
PY=${PYTHON:-python}
mkdir -p "$RUN"
RUN_ABS=$(cd "$RUN" && pwd)   # recipe paths given with --set are read relative to the recipe: pass absolute ones
: > "$RUN/timings.tsv"
step() {  # step NAME COMMAND...: run and record the wall time
  local name=$1; shift
  echo "== $name: $*"
  local t0=$(date +%s.%N)
  "$@"
  printf "%s\t%.1f\n" "$name" "$(echo "$(date +%s.%N) - $t0" | bc)" >> "$RUN/timings.tsv"
}

# 1. Split the queries: never evaluate on a query trained on.
step split $PY examples/scifact_subset.py --data-dir "$DATA" --out "$RUN/data" --split-queries \
  --distractors "$DISTRACTORS" --seed "$SEED"

# 2. The start model on the held-out half and the other tasks (the "before" column).
step eval_base $ET eval "$MODEL" --tasks "SciFactHeldOut,$TASKS" --task-config "$RUN/data/task.yaml" \
  --data-dir "$DATA" -o "$RUN/eval_base" --no-progress

# 3. Mine 3 hard negatives per training pair, straight from the BEIR folder (corpus = title + text, as mteb
#    embeds it), at the length the model is trained at; keep the rows that find too few negatives aside.
step mine $ET mine --model "$MODEL" --input "$RUN/data/scifact_train" --split train \
  --output "$RUN/mined.jsonl" --num-negatives 3 --range-max 50 $MINE_FILTER \
  --max-seq-length 128 --keep-dropped

# 4. Train (recipes/retrieval_scifact.yaml: MNRL; LOSS=gist: GIST with the start model as guide).
LOSS_SET=(--set loss.name=mnrl)
if [ "$LOSS" = gist ]; then LOSS_SET=(--set loss.name=gist --set "loss.params.guide=$MODEL"); fi
step train $ET train recipes/retrieval_scifact.yaml --overwrite --set "model.name_or_path=$MODEL" \
  --set "datasets.0.path=$RUN_ABS/mined.jsonl" --set "output_dir=$RUN_ABS/$LOSS" \
  --set "training.num_train_epochs=$EPOCHS" "${LOSS_SET[@]}"

# 5. The fine-tune on the same tasks, then the side-by-side report (other tasks flagged if they drop > 0.5).
step eval_tuned $ET eval "$RUN/$LOSS/final" --tasks "SciFactHeldOut,$TASKS" --task-config "$RUN/data/task.yaml" \
  --data-dir "$DATA" -o "$RUN/eval_$LOSS" --no-progress
step compare $ET eval --compare "$RUN/eval_base" "$RUN/eval_$LOSS" --trained-on SciFactHeldOut \
  -o "$RUN/compare.md"

# 6. Stage the Hub upload: exactly the files that would go up, card included (--dry-run uploads nothing).
step push_dry_run $ET push "$RUN/$LOSS/final" --repo-id my-org/minilm-scifact-$LOSS \
  --results "$RUN/eval_$LOSS" --dry-run "$RUN/staged"

cat "$RUN/compare.md"
cat "$RUN/timings.tsv"
