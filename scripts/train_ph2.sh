#!/usr/bin/env bash
# Trains EGE-UNet on PH2 with the project's fixed split, through the bundle's own training workflow: all 140 training
# ids, no validation, the final epoch kept as models/model.pt (the test ids are never seen).
# Resumable: run it again after an interruption and it continues from runs/ph2/models/checkpoint.pt.
#   bash scripts/train_ph2.sh [PH2_DIR] [SPLIT_JSON] [RUN_DIR] [extra monai.bundle overrides...]
set -euo pipefail
cd "$(dirname "$0")/.."
PH2_DIR=${1:-../shared/data/ph2}
SPLIT=${2:-data/ph2_split.json}
RUN_DIR=${3:-runs/ph2}
shift $(( $# < 3 ? $# : 3 ))
mkdir -p "$RUN_DIR"
python -m monai.bundle run training --config_file configs/train.json \
    --dataset_dir "$PH2_DIR" --split_file "$SPLIT" --val_fraction 0 \
    --ckpt_dir "$RUN_DIR/models" --output_dir "$RUN_DIR/eval" "$@"
