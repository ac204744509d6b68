#!/usr/bin/env bash
# After the GPU run (scripts/train_gpu.py): check its checkpoints, put them in weights/, evaluate every shipped
# checkpoint on every evaluation set, record the numbers on the cards and write the README quality table.
#
#   bash scripts/install_gpu_weights.sh DIR        # DIR: the run's $OUT as fetched (read-only is fine)
#
# Needs pydicom-data (+ pylibjpeg plugins for the JPEG 2000 / lossless slices) and anatomy/ (scripts/
# anatomy_slices.py) for the real sets. NAMES="a b" limits the evaluation to those checkpoints (default: all six).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SRC=${1:?usage: install_gpu_weights.sh DIR}
THREADS=${THREADS:-2}

for name in resunet-ct cnn-ct resunet-deblur; do
    if [ ! -f "$SRC/$name.json" ]; then
        echo "== $name: not in $SRC, the shipped one stays"
        continue
    fi
    # load_trained refuses a file whose sha256 differs from its card, or a card for another model/task
    $PY -c "import sys; from recon.training.weights import load_trained; load_trained(*sys.argv[1].split('-', 1), sys.argv[2])" \
        "$name" "$SRC/$name.json"
    cp "$SRC/$name.safetensors" "$SRC/$name.json" weights/
    chmod 644 "weights/$name.safetensors" "weights/$name.json"
    echo "== $name: installed; held-out set again here (the card's numbers come from the GPU machine's CPU):"
    $PY -c "from recon.training.cli import eval_main; eval_main()" --model "${name%%-*}" --task "${name#*-}" \
        --threads "$THREADS"
done

mkdir -p runs
ALL=(${NAMES:-resunet-ct cnn-ct resunet-deblur rescnn-deblur cnn-deblur vit-deblur})
$PY scripts/real_data_card.py --write --threads "$THREADS" --json runs/real_data.json \
    --markdown runs/quality_table.md "${ALL[@]}"
echo "== README table (runs/quality_table.md):"
cat runs/quality_table.md
$PY -m pytest -q tests/training/test_weights.py
