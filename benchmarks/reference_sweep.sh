#!/usr/bin/env bash
# The SST-2 reference on minilm-l6: each row's learning rate chosen on a validation split at the
# full budget by a pruned search, then three seeds at the chosen rate, scored once on dev.
#
#   benchmarks/reference_sweep.sh                       # every row below, in turn
#   benchmarks/reference_sweep.sh lst klst-k1 klst-k3   # some rows
#   benchmarks/reference_sweep.sh --report              # documents and reports from the storage, no training
#
# The protocol, per row:
#   1. its declared learning-rate grid (a tenth to ten times the method's default, two rates per
#      decade), one epoch per configuration as the full budget, seed 0, pruned by successive halving
#      (validation accuracy at 1/8, 1/4, 1/2 and all of the epoch; the best two of every rung go on)
#                                                                -> study ROW-lr-pruned
#      while the best rate at the full budget is the grid's highest or lowest, one more rate half a
#      decade beyond it (twice at most)
#   2. the chosen rate with seeds 0, 1, 2 on the full budget     -> study ROW-best-3seeds
#      (seed 0 is the search's own full-budget run of that rate, taken over: the same run)
# Selection only ever reads the validation split (872 sentences carved from SST-2 train, stratified,
# seeded, never trained on); dev is scored once per finished run and reported with a 95% bootstrap
# interval over its sentences, and rows are compared paired on the same sentences.
# Then the reports: reports/accuracy/reference.md (step 2) and reports/accuracy/reference-grid.md
# (step 1). Batch 32, max length 64, length-grouped batches (spbench sweep's defaults).
#
# Hours of CPU. Resumable: stop it at any point (Ctrl-C, a crash, a reboot) and run it again;
# finished trials are never trained again. Commit the storage (OUT/sweep.journal) after each row.
# SST-2 comes from $SPBENCH_SST2_DIR (or pass --sst2-dir through SPBENCH_SWEEP_ARGS).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${SPBENCH_REFERENCE_OUT:-reports/accuracy/reference}"  # storage and each study's results
REPORT="${SPBENCH_REFERENCE_REPORT:-reports/accuracy/reference}"  # REPORT.md, REPORT.png, REPORT-grid.md
EXTRA=(${SPBENCH_SWEEP_ARGS:-})

# row -> method, its fixed settings, its full budget
declare -A METHOD=(
  [full_ft]=full_ft [lora]=lora [lora_blocks]=lora_blocks [side_lora]=side_lora [lst]=lst
  [klst-k1]=klst [klst-k3]=klst [mezo]=mezo [mezo_lst]=mezo_lst)
declare -A SETS=([klst-k1]="--set k=1" [klst-k3]="--set k=3")
declare -A BUDGET=([mezo]="steps=20000")  # MeZO needs many more, cheaper steps (>= 20,000)
ROWS=(full_ft lora lora_blocks side_lora lst klst-k1 klst-k3 mezo mezo_lst)
REPORT_ONLY=0
if [ "${1:-}" = "--report" ]; then  # rewrite each study's document from the storage, render, train nothing
  REPORT_ONLY=1
  shift
fi
if [ $# -eq 0 ]; then
  set -- "${ROWS[@]}"
fi

# The grid of a finished study, one rate more when its best full-budget rate (by validation
# accuracy) is at an edge; nothing when it is inside (spbench/sweep/edge.py).
beyond_edge() {
  python -m spbench.sweep.edge "$1"
}

for row in "$@"; do
  method="${METHOD[$row]:-}"
  if [ -z "$method" ]; then
    echo "unknown row '$row'; rows: ${ROWS[*]}" >&2
    exit 2
  fi
  sets=(${SETS[$row]:-})
  budget="${BUDGET[$row]:-epochs=1}"
  common=(--method "$method" "${sets[@]}" --budget "$budget" --out "$OUT" "${EXTRA[@]}")
  if [ "$REPORT_ONLY" = 1 ]; then  # a study not in the storage yet is skipped
    spbench sweep "${common[@]}" --grid lr --pruner halving --study "$row-lr-pruned" --status >/dev/null 2>&1 || true
    spbench sweep "${common[@]}" --best-from "$row-lr-pruned" --seeds 0,1,2 --study "$row-best-3seeds" \
      --status >/dev/null 2>&1 || true
    continue
  fi
  spbench sweep "${common[@]}" --grid lr --pruner halving --study "$row-lr-pruned"
  for _ in 1 2; do
    grid=$(beyond_edge "$OUT/$row-lr-pruned.json")
    [ -n "$grid" ] || break
    spbench sweep "${common[@]}" --grid "lr=$grid" --pruner halving --study "$row-lr-pruned"
  done
  spbench sweep "${common[@]}" --best-from "$row-lr-pruned" --seeds 0,1,2 --study "$row-best-3seeds"
done
shopt -s nullglob
best=("$OUT"/*-best-3seeds.json)
grid=("$OUT"/*-lr-pruned.json)
[ ${#best[@]} -gt 0 ] && spbench report "${best[@]}" -o "$REPORT.md" --plot "$REPORT.png"
[ ${#grid[@]} -gt 0 ] && spbench report "${grid[@]}" -o "$REPORT-grid.md"
echo "reference: ${#best[@]} rows with three seeds: $REPORT.md"
