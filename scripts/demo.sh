#!/usr/bin/env bash
# `make demo`: shipped weights → recon-export (deblur and CT, FP32 + FP16) → recon-simulate held-out images →
# recon-run → a comparison figure (truth / degraded / reconstructed, PSNR and SSIM) and a latency table.
# Everything lands in demo-out/ (git-ignored). No network.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
OUT=${OUT:-demo-out}
N=${N:-4}
rm -rf "$OUT"
mkdir -p "$OUT"

for task in deblur ct; do
    echo "== $task: export, simulate, reconstruct"
    "$BIN/recon-export" --model resunet --task "$task" --fp16 --out "$OUT/resunet-$task"
    "$BIN/recon-simulate" --task "$task" --heldout "$N" --out "$OUT/$task-in"
    "$BIN/recon-run" "$OUT/resunet-$task" "$OUT/$task-in/measurements/"*.npy --out "$OUT/$task-recon"
    "$BIN/recon-bench" "$OUT/resunet-$task" --batch 1,8 --iters 20 --warmup 3 --json-out "$OUT/bench-$task.json" \
        > "$OUT/bench-$task.txt"
done

"$BIN/python" scripts/demo_figure.py "$OUT"
