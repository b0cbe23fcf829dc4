#!/usr/bin/env bash
# Reproduces the PH2 results end to end from the PH2 folder: trains EGE-UNet (and, with BASELINE=1, MONAI's UNet the
# same way), evaluates each on the 60 test images at full resolution, and prints the results table.
# Protocol (the original release's): all 140 training ids train, no validation, the final epoch (300) is kept; model
# selection never sees the 60 test ids.
#   bash scripts/reproduce_ph2.sh [PH2_DIR]            (PH2_DIR defaults to ../shared/data/ph2)
# Every step resumes: run it again after an interruption.
set -euo pipefail
cd "$(dirname "$0")/.."
PH2_DIR=${1:-../shared/data/ph2}
SPLIT=data/ph2_split.json
COMMON=(--dataset_dir "$PH2_DIR" --split_file "$SPLIT" --val_fraction 0)

run_model () {  # name, extra config files...
    local name=$1; shift
    local extra=""
    for c in "$@"; do extra="$extra,'$c'"; done
    python -m monai.bundle run training --config_file "['configs/train.json'$extra]" "${COMMON[@]}" \
        --ckpt_dir "runs/$name/models" --output_dir "runs/$name/eval"
    # overlays come after evaluate.json, so that they override what it defines (the baseline is not fused)
    python -m monai.bundle run evaluating --config_file "['configs/train.json','configs/evaluate.json'$extra]" "${COMMON[@]}" \
        --ckpt_path "runs/$name/models/model.pt" --output_dir "runs/$name/test"
}

start=$(date +%s)
run_model ph2
if [ "${BASELINE:-0}" = 1 ]; then
    run_model ph2_unet configs/baseline_unet.json
fi
echo "total time: $(( $(date +%s) - start )) s"
python scripts/results_table.py ph2=runs/ph2/test/metrics.json ${BASELINE:+ph2_unet=runs/ph2_unet/test/metrics.json}
