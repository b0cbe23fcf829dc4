#!/usr/bin/env bash
# Reproduces the shipped weights and the model card's results end to end from the two data folders:
#   1. the datalist (ISIC 2018 train ids + PH2 train ids, a seeded 10% held out for validation) and the 50-epoch
#      training through the bundle's training workflow (scripts/train_isic_ph2.sh; resumable): stage 1, its best
#      validation model;
#   2. the inference options scored on the validation images only, with stage 1's model
#      (scripts/select_inference_options.py);
#   3. the PH2-weighted warm restart from stage 1's model (scripts/finetune_isic_ph2.sh with EPOCHS=40 LR=5e-4
#      PH2_REPEAT=4) and its rule, fixed before it trained: its best validation model replaces stage 1's only if
#      scripts/compare_weights.py scores it at least as high on the validation images, overall and on their PH2
#      photos (it did: it is the shipped bundle/models/model.pt);
#   4. the evaluation of the shipped model on both test sets through the inference pipeline, with the options
#      configs/inference.json ships (set them from step 2's table first);
#   5. the results table, eval_metrics of configs/metadata.json (METADATA=1), and the overlays of the worst three and
#      two typical test images per test set;
#   6. with STAGE2=1, the 10-epoch PH2-weighted fine-tuning that was tried and not shipped, its final epoch on both
#      test sets and both models compared on the validation images (scripts/compare_weights.py).
#   bash scripts/reproduce_isic_ph2.sh [ISIC_DIR] [PH2_DIR] [RUN_DIR]
# Every step resumes or is skipped when its output exists: run it again after an interruption.
set -euo pipefail
cd "$(dirname "$0")/.."
ISIC_DIR=${1:-../shared/data/isic2018}
PH2_DIR=${2:-../shared/data/ph2}
RUN_DIR=${3:-runs/isic_ph2}
STAGE1="$RUN_DIR/models/model.pt"
RESTART_DIR="${RUN_DIR}_restart"
CKPT="$RESTART_DIR/models/model.pt"

evaluate () {  # output folder, weights, data folder, split file
    [ -f "$1/metrics.json" ] || python -m monai.bundle run evaluating \
        --config_file "['configs/train.json','configs/evaluate.json']" --dataset_dir "$3" --split_file "$4" \
        --val_fraction 0 --ckpt_path "$2" --output_dir "$1" --num_overlays 0
}

start=$(date +%s)
bash scripts/train_isic_ph2.sh "$ISIC_DIR" "$PH2_DIR" "$RUN_DIR"
python scripts/select_inference_options.py --datalist "$RUN_DIR/datalist.json" --ckpt_path "$STAGE1" \
    --out "$RUN_DIR/inference_options"
EPOCHS=40 LR=5e-4 PH2_REPEAT=4 bash scripts/finetune_isic_ph2.sh "$STAGE1" "$RESTART_DIR" "$ISIC_DIR" "$PH2_DIR"
python scripts/compare_weights.py --datalist "$RESTART_DIR/datalist.json" --weights "$STAGE1" "$CKPT" \
    --out "$RESTART_DIR/validation"
evaluate "$RESTART_DIR/isic2018_test" "$CKPT" "$ISIC_DIR" data/isic2018_split.json
evaluate "$RESTART_DIR/ph2_test" "$CKPT" "$PH2_DIR" data/ph2_split.json
for name in isic2018 ph2; do
    python scripts/card_overlays.py "$RESTART_DIR/${name}_test" --ckpt_path "$CKPT" --out "$RESTART_DIR/overlays" \
        --prefix "$name"
done
python scripts/results_table.py "isic2018_test=$RESTART_DIR/isic2018_test/metrics.json" \
    "ph2_test=$RESTART_DIR/ph2_test/metrics.json" ${METADATA:+--metadata configs/metadata.json}

if [ "${STAGE2:-0}" = 1 ]; then
    FT_DIR="${RUN_DIR}_ft"
    FT_CKPT="$FT_DIR/models/snapshots/model_epoch=10.pt"
    bash scripts/finetune_isic_ph2.sh "$STAGE1" "$FT_DIR" "$ISIC_DIR" "$PH2_DIR"
    evaluate "$FT_DIR/isic2018_test" "$FT_CKPT" "$ISIC_DIR" data/isic2018_split.json
    evaluate "$FT_DIR/ph2_test" "$FT_CKPT" "$PH2_DIR" data/ph2_split.json
    python scripts/compare_weights.py --datalist "$FT_DIR/datalist.json" --out "$FT_DIR/validation" \
        --weights "$STAGE1" "$FT_CKPT" "$FT_DIR/models/model.pt"
    python scripts/results_table.py "isic2018_test_stage2=$FT_DIR/isic2018_test/metrics.json" \
        "ph2_test_stage2=$FT_DIR/ph2_test/metrics.json"
fi
echo "total time: $(( $(date +%s) - start )) s"
