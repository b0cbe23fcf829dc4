#!/usr/bin/env bash
# A second, PH2-weighted training stage. With its defaults, tried and not shipped (the model card gives its figures
# and why); as the warm restart below, the shipped weights (bundle version 0.4.0). It fine-tunes
# the 50-epoch ISIC 2018 + PH2 model (scripts/train_isic_ph2.sh) through the bundle's training workflow on the same
# training images with each PH2 photo listed PH2_REPEAT times (default 5: 645 PH2 + 1,777 ISIC images per epoch),
# 10 epochs, learning rate 1e-4 annealed to 1e-5 (cosine, T_max 10). Its model is the final epoch,
# RUN_DIR/models/snapshots/model_epoch=10.pt, a rule fixed before any test figure of it: 11 PH2 validation photos are
# too few to rank epochs by (the workflow still validates on the first stage's 201 ISIC + 11 PH2 photos every epoch
# and keeps its best as models/model.pt, for scripts/compare_weights.py). Resumable: run it again after an
# interruption.
# EPOCHS, LR and PH2_REPEAT (environment) change the stage's length, starting learning rate and PH2 weight; the
# second attempt recorded in the model card, a warm restart, is
#   EPOCHS=40 LR=5e-4 PH2_REPEAT=4 bash scripts/finetune_isic_ph2.sh runs/isic_ph2/models/model.pt runs/isic_ph2_restart
# Its rule, fixed before it trained: its candidate is the run's best validation model (RUN_DIR/models/model.pt), and it
# replaces the shipped weights only if scripts/compare_weights.py scores it at least as high as the shipped weights on
# the 212 validation images, both overall and on their 11 PH2 photos (mean Dice); its test figures are reported
# either way. It passed (validation mean Dice 0.9134 vs 0.9123 overall, 0.9444 vs 0.9434 on the PH2 photos) and
# replaced them.
#   bash scripts/finetune_isic_ph2.sh [INIT_CKPT] [RUN_DIR] [ISIC_DIR] [PH2_DIR] [extra monai.bundle overrides...]
set -euo pipefail
cd "$(dirname "$0")/.."
INIT=${1:-runs/isic_ph2/models/model.pt}
RUN_DIR=${2:-runs/isic_ph2_ft}
ISIC_DIR=${3:-../shared/data/isic2018}
PH2_DIR=${4:-../shared/data/ph2}
shift $(( $# < 4 ? $# : 4 ))
mkdir -p "$RUN_DIR"
[ -f "$RUN_DIR/datalist.json" ] || python scripts/isic_ph2_datalist.py "$RUN_DIR/datalist.json" \
    --isic_dir "$ISIC_DIR" --ph2_dir "$PH2_DIR" --ph2_repeat "${PH2_REPEAT:-5}"
python -m monai.bundle run training --config_file configs/train.json \
    --dataset_dir "$RUN_DIR/datalist.json" --init_ckpt_path "$INIT" --max_epochs "${EPOCHS:-10}" --learning_rate "${LR:-1e-4}" \
    --lr_scheduler#T_max "${EPOCHS:-10}" --snapshot_interval 1 --ckpt_dir "$RUN_DIR/models" --output_dir "$RUN_DIR/eval" "$@"
