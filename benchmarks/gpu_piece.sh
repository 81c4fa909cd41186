#!/usr/bin/env bash
# One piece of the full protocol on one GPU, sized for one command of a short GPU loan (docs/gpu.md):
#   MODEL ae | vae   the 8 grid runs of that model for seed SEED (stacked, 200 epochs, 49,000 training images)
#   MODEL rd         the two clean, unregularized runs of SEED and the rate-distortion curves (gpu sweep)
# Each finished run's weight-free files land in OUTDIR/bundle.tar.gz the moment it is evaluated, so a piece
# stopped at the time limit still returns every finished run; `"$PY" -m src merge` joins the pieces.
#
# usage: benchmarks/gpu_piece.sh OUTDIR MODEL SEED
#
# OUTDIR receives at most 5 files, none over 16 MiB: bundle.tar.gz, piece.log (plan, trainer path and images/s),
# REPORT.md (this piece's report), env.txt (GPU, driver, torch), timing.txt (seconds per step).
# Work files (sample, checkpoints) go to $WORK (default /tmp/aevae-piece); $PYTHON (default python3, the one with torch on the GPU machines) runs it. The sample is made on all cores
# from the same seed and generator version in every piece, so every piece has the same data fingerprint.
# BUDGET (default 540 s) is the whole script's: the reproduce step gets what the sample left of it.
# EXTRA: more reproduce flags, word-split (e.g. EXTRA="--images-per-s 250000" to plan with a stated rate).
# A dry run on a CPU: PRESET=smoke N=60 DEVICE=cpu benchmarks/gpu_piece.sh /tmp/dry ae 0
set -euo pipefail -f  # -f: no pathname expansion (EXTRA may hold run-name patterns)
OUT=${1:?usage: benchmarks/gpu_piece.sh OUTDIR MODEL SEED}
MODEL=${2:?usage: benchmarks/gpu_piece.sh OUTDIR MODEL SEED (MODEL: ae, vae or rd)}
SEED=${3:?usage: benchmarks/gpu_piece.sh OUTDIR MODEL SEED}
case "$MODEL" in ae|vae|rd) ;; *) echo "error: MODEL must be ae, vae or rd, got $MODEL" >&2; exit 2 ;; esac
case "$SEED" in ''|*[!0-9]*) echo "error: SEED must be an integer >= 0, got $SEED" >&2; exit 2 ;; esac
cd "$(dirname "$0")/.."
PRESET=${PRESET:-full} N=${N:-70000} DEVICE=${DEVICE:-cuda} RD=${RD:-gpu} BUDGET=${BUDGET:-540}
PARALLEL=${PARALLEL:-0}  # runs per stack: 0 = all 8 of the model in one stack; 4 or 2 return runs sooner
WORK=${WORK:-/tmp/aevae-piece} PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1  # every log line reaches piece.log at once, also when the command is killed at its limit
mkdir -p "$OUT" "$WORK"
OUT=$(cd "$OUT" && pwd)
t0=$(date +%s)
stamp() { echo "[gpu_piece] $(( $(date +%s) - t0 )) s: $*" | tee -a "$OUT/piece.log" >&2; echo "$*: $(( $(date +%s) - t0 ))" >> "$OUT/timing.txt"; }

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" || true; } > "$OUT/env.txt" 2>&1
stamp "sample of $N faces (all $(nproc) cores)"
"$PY" -m src data sample --n "$N" --out "$WORK/sample" --workers "$(nproc)" 2>&1 | tail -n 1 | tee -a "$OUT/piece.log"
left=$(( BUDGET - ($(date +%s) - t0) ))
if [ "$MODEL" = rd ]; then
  pick=(--runs '*-none-clean-*' --rd-sweep "$RD") runs="$WORK/runs-rd-s$SEED"
else
  pick=(--models "$MODEL" --rd-sweep none) runs="$WORK/runs-$MODEL-s$SEED"
fi
stamp "reproduce: $MODEL seed $SEED, budget $left s"
status=0
"$PY" -m src reproduce --preset "$PRESET" --seeds "$SEED," "${pick[@]}" --data "$WORK/sample" --out "$runs" \
    --device "$DEVICE" --parallel-runs "$PARALLEL" --budget-s "$left" --bundle "$OUT/bundle.tar.gz" --no-progress ${EXTRA:-} \
    2>&1 | tee -a "$OUT/piece.log" || status=$?
[ -f "$runs/REPORT.md" ] && cp "$runs/REPORT.md" "$OUT/REPORT.md"
stamp "done (reproduce exit status $status)"
exit "$status"
