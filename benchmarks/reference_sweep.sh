#!/usr/bin/env bash
# The committed SST-2 reference on minilm-l6 (issue 11): tuned learning rate, three seeds, one epoch.
#
#   benchmarks/reference_sweep.sh                 # full_ft lora side_lora lst klst mezo_lst, in turn
#   benchmarks/reference_sweep.sh lora lst        # some of them
#
# Per method:
#   1. its declared learning-rate grid (five values from a tenth to ten times the method's default,
#      two per decade) on a quarter epoch, seed 0            -> study METHOD-lr-grid
#      while the best rate is the grid's highest or lowest, one more rate half a decade beyond it
#      (at most two more: full_ft's best was its highest, 2e-4; 6.3e-4 diverged)
#   2. the best rate of step 1 with seeds 0,1,2 on one epoch -> study METHOD-best-3seeds
# then the reports: reports/accuracy/sweep.md (+ .png; step 2, accuracy and F1 as mean ± std (n))
# and reports/accuracy/sweep-grid.md (step 1). Batch 32, max length 64 (spbench sweep's defaults).
# The committed storage also holds one check outside these steps, side_lora at its grid's
# second-best rate on one epoch (its report row is side_lora (lr=0.0005)), run as:
#   spbench sweep --method side_lora --grid lr=5e-4 --seeds 0,1,2 --budget epochs=1 \
#     --study side_lora-lr5e-4-3seeds --out reports/accuracy/sweep
#
# Hours of CPU. Resumable: stop it at any point (Ctrl-C, a crash, the end of a session) and run it
# again; finished trials are never trained again. The storage, reports/accuracy/sweep/sweep.journal,
# is meant to be committed after each finished step so the next session carries on from it.
# SST-2 comes from $SPBENCH_SST2_DIR (or pass --sst2-dir through SPBENCH_SWEEP_ARGS).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${SPBENCH_REFERENCE_OUT:-reports/accuracy/sweep}"  # storage and each study's results
REPORT="${SPBENCH_REFERENCE_REPORT:-reports/accuracy/sweep}"  # REPORT.md, REPORT.png, REPORT-grid.md
EXTRA=(${SPBENCH_SWEEP_ARGS:-})
if [ $# -eq 0 ]; then
  set -- full_ft lora side_lora lst klst mezo_lst
fi
# The grid of a finished grid study, one rate more when its best is at an edge; nothing when inside.
beyond_edge() {
  python - "$1" <<'PY'
import json, math, sys
runs = [b["extra_info"] for b in json.load(open(sys.argv[1]))["benchmarks"] if b["param"] != "predicted"]
acc = {r["method_config"]["lr"]: r.get("sst2_accuracy") or 0.0 for r in runs}
best, rates = max(acc, key=acc.get), sorted(acc)
if best in (rates[0], rates[-1]) and len(rates) > 1:
    step = math.sqrt(10) if best == rates[-1] else 1 / math.sqrt(10)
    print(",".join(f"{v:.2g}" for v in sorted(rates + [float(f"{best * step:.2g}")])))
PY
}

for method in "$@"; do
  spbench sweep --method "$method" --grid lr --budget epochs=0.25 --study "$method-lr-grid" \
    --out "$OUT" "${EXTRA[@]}"
  for _ in 1 2; do
    grid=$(beyond_edge "$OUT/$method-lr-grid.json")
    [ -n "$grid" ] || break
    spbench sweep --method "$method" --grid "lr=$grid" --budget epochs=0.25 --study "$method-lr-grid" \
      --out "$OUT" "${EXTRA[@]}"
  done
  spbench sweep --method "$method" --best-from "$method-lr-grid" --seeds 0,1,2 --budget epochs=1 \
    --study "$method-best-3seeds" --out "$OUT" "${EXTRA[@]}"
done
shopt -s nullglob
best=("$OUT"/*-3seeds.json)  # METHOD-best-3seeds, and checks such as side_lora-lr5e-4-3seeds
grid=("$OUT"/*-lr-grid.json)
[ ${#best[@]} -gt 0 ] && spbench report "${best[@]}" -o "$REPORT.md" --plot "$REPORT.png"
[ ${#grid[@]} -gt 0 ] && spbench report "${grid[@]}" -o "$REPORT-grid.md"
echo "reference: ${#best[@]} studies with three seeds: $REPORT.md"
