#!/usr/bin/env bash
# Reproduces the shipped weights and the model card's results end to end from the two data folders:
#   1. the datalist (ISIC 2018 train ids + PH2 train ids, a seeded 10% held out for validation) and the 50-epoch
#      training through the bundle's training workflow (scripts/train_isic_ph2.sh; resumable);
#   2. the inference options scored on the validation images only (scripts/select_inference_options.py);
#   3. the evaluation of the best validation model on both test sets through the inference pipeline, with the
#      options configs/inference.json ships (set them from step 2's table first);
#   4. the results table, eval_metrics of configs/metadata.json (METADATA=1), and the overlays of the worst three and
#      two typical test images per test set.
#   bash scripts/reproduce_isic_ph2.sh [ISIC_DIR] [PH2_DIR] [RUN_DIR]
# Every step resumes or is skipped when its output exists: run it again after an interruption.
set -euo pipefail
cd "$(dirname "$0")/.."
ISIC_DIR=${1:-../shared/data/isic2018}
PH2_DIR=${2:-../shared/data/ph2}
RUN_DIR=${3:-runs/isic_ph2}
CKPT="$RUN_DIR/models/model.pt"

start=$(date +%s)
bash scripts/train_isic_ph2.sh "$ISIC_DIR" "$PH2_DIR" "$RUN_DIR"
python scripts/select_inference_options.py --datalist "$RUN_DIR/datalist.json" --ckpt_path "$CKPT" \
    --out "$RUN_DIR/inference_options"

evaluate () {  # name, data folder, split file
    [ -f "$RUN_DIR/$1_test/metrics.json" ] || python -m monai.bundle run evaluating \
        --config_file "['configs/train.json','configs/evaluate.json']" --dataset_dir "$2" --split_file "$3" \
        --val_fraction 0 --ckpt_path "$CKPT" --output_dir "$RUN_DIR/$1_test" --num_overlays 0
    python scripts/card_overlays.py "$RUN_DIR/$1_test" --ckpt_path "$CKPT" --out "$RUN_DIR/overlays" --prefix "$1"
}
evaluate isic2018 "$ISIC_DIR" data/isic2018_split.json
evaluate ph2 "$PH2_DIR" data/ph2_split.json
echo "total time: $(( $(date +%s) - start )) s"
python scripts/results_table.py "isic2018_test=$RUN_DIR/isic2018_test/metrics.json" \
    "ph2_test=$RUN_DIR/ph2_test/metrics.json" ${METADATA:+--metadata configs/metadata.json}
