#!/usr/bin/env bash
# Trains the shipped weights through the bundle's own training workflow: ISIC 2018 train ids + PH2 train ids (fixed
# splits in data/), 10% of them held out for validation (model selection; test ids are never seen), 50 epochs (one
# cosine half-cycle, T_max 50), network snapshots every 5 epochs.
# Resumable: run it again after an interruption and it continues from RUN_DIR/models/checkpoint.pt.
#   bash scripts/train_isic_ph2.sh [ISIC_DIR] [PH2_DIR] [RUN_DIR] [extra monai.bundle overrides...]
set -euo pipefail
cd "$(dirname "$0")/.."
ISIC_DIR=${1:-../shared/data/isic2018}
PH2_DIR=${2:-../shared/data/ph2}
RUN_DIR=${3:-runs/isic_ph2}
shift $(( $# < 3 ? $# : 3 ))
mkdir -p "$RUN_DIR"
[ -f "$RUN_DIR/datalist.json" ] || python scripts/isic_ph2_datalist.py "$RUN_DIR/datalist.json" \
    --isic_dir "$ISIC_DIR" --ph2_dir "$PH2_DIR"
python -m monai.bundle run training --config_file configs/train.json \
    --dataset_dir "$RUN_DIR/datalist.json" --max_epochs 50 --snapshot_interval 5 \
    --ckpt_dir "$RUN_DIR/models" --output_dir "$RUN_DIR/eval" "$@"
