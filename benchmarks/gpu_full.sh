#!/usr/bin/env bash
# The full protocol on one GPU, in one call, for anyone who has one:
#   generate the 70,000-face synthetic sample (all cores) -> train the 16-run grid (stacked, 200 epochs,
#   49,000 training images) -> evaluate -> rate-distortion (codecs, PCA and the grid's models) -> figures
#   -> a weight-free results bundle in OUTDIR.
#
# usage: benchmarks/gpu_full.sh OUTDIR [SEEDS]      (SEEDS: 1 by default; 3 is the protocol's full count)
#
# OUTDIR receives: full-synthetic.tar.gz (the bundle: `python -m src report` redraws every figure from it),
# REPORT.md and Figures/ (the rendered report), reproduce.log, benchmark.json (stacked-trainer images/s on
# this GPU), env.txt (GPU, driver, torch). Nothing in OUTDIR holds weights. Work files (sample, checkpoints)
# go to $WORK (default: /tmp/aevae-full). The budget is 12 minutes on one H100/H200 for 1 seed; this script
# has not yet been timed on such a GPU (no GPU was available when it was written), so time it and report.
set -euo pipefail
OUT=${1:?usage: benchmarks/gpu_full.sh OUTDIR [SEEDS]}
SEEDS=${2:-1}
cd "$(dirname "$0")/.."
WORK=${WORK:-/tmp/aevae-full}
# a dry run of the same steps on a CPU: PRESET=smoke N=300 DEVICE=cpu RD=smoke benchmarks/gpu_full.sh /tmp/dry
PRESET=${PRESET:-full} N=${N:-70000} DEVICE=${DEVICE:-cuda} RD=${RD:-gpu}
mkdir -p "$OUT" "$WORK"
OUT=$(cd "$OUT" && pwd)
t0=$(date +%s)
stamp() { echo "[gpu_full] $(( $(date +%s) - t0 )) s: $*" | tee -a "$OUT/reproduce.log"; }

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
  python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"; } > "$OUT/env.txt" 2>&1
stamp "generating the sample"
python -m src data sample --n "$N" --out "$WORK/sample" --workers "$(nproc)" 2>&1 | tail -n 1 | tee -a "$OUT/reproduce.log"
stamp "training the grid"
python -m src reproduce --preset "$PRESET" --seeds "$SEEDS" --data "$WORK/sample" --out "$WORK/runs" --device "$DEVICE" \
    --rd-sweep "$RD" --no-progress 2>&1 | tee -a "$OUT/reproduce.log"
stamp "exporting"
python -m src export "$WORK/runs" "$OUT/full-synthetic.tar.gz" | tee -a "$OUT/reproduce.log"
rm -rf "$OUT/Figures" && cp -r "$WORK/runs/Figures" "$OUT/Figures" && cp "$WORK/runs/REPORT.md" "$OUT/REPORT.md"
stamp "stacked-trainer benchmark"
timeout 180 python -m benchmarks.run --skip train eval --device "$DEVICE" --out "$OUT/benchmark.json" >/dev/null 2>&1 \
    || stamp "benchmark skipped or failed (see above); results are complete without it"
stamp "done"
