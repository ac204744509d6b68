#!/usr/bin/env bash
# Train the six shipped checkpoints one after another on the CPU, each within a time budget (minutes),
# then copy <model>-<task>.safetensors + .json card into weights/. Logs: runs/<model>-<task>/train.log.
#
#   nohup setsid bash scripts/train_weights.sh > runs/train_weights.log 2>&1 &
#
# Budgets sum to 109 minutes (+ ~5 for data, validation and the held-out evaluations); they mirror
# training/recipes.py, whose commands the shipped cards record. With a GPU, raise them
# or pass --steps instead: the recipe is otherwise the same. The real-anatomy recipes (GPU_RECIPES) run
# side by side on one GPU from scripts/train_gpu.py (docs/real-data.md); on this CPU each of them takes
# the same `recon-train` command with a CPU --time-budget (not measured here).
set -u
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
THREADS=${THREADS:-2}
# The machine is shared: passive OpenMP waits keep a descheduled peer thread from stalling the spinning one.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
COMMON=(--threads "$THREADS" --amp bf16 --loss "0.9*l1+0.1*ssim" --crop 128 --batch-size 8 --pool 512
        --steps-per-epoch 200 --heldout 32 --seed 0)

train() {  # train NAME MINUTES [extra recon-train options]
    local name=$1 budget=$2
    shift 2
    mkdir -p "runs/$name"
    echo "== $name: ${budget} min, started $(date +%T)"
    if $PY -m recon.training.cli --model "${name%-*}" --task "${name#*-}" --time-budget "$budget" \
        --out "runs/$name" "${COMMON[@]}" "$@" > "runs/$name/train.log" 2>&1; then
        cp "runs/$name/$name.safetensors" "runs/$name/$name.json" weights/
        echo "   $(grep 'held-out' "runs/$name/train.log")"
    else
        echo "   FAILED (runs/$name/train.log):"
        tail -3 "runs/$name/train.log"
    fi
}

train resunet-deblur 20
train resunet-ct 15
train rescnn-deblur 15
train vit-deblur 40 --lr 5e-4
train cnn-ct 7
train cnn-deblur 12 --lr 2e-3
echo "== all done $(date +%T)"
