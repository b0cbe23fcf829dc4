#!/usr/bin/env bash
# Measures every figure of the model card (bundle/docs/README.md) again for the committed weights, through the
# pipeline a user runs today, without training anything: run it after a change to the inference pipeline.
#   - the shipped weights (bundle/models/model.pt), stage 1's model (results/isic_ph2/model.pt, version 0.3.0's
#     weights), its epoch-35 snapshot and the 10-epoch fine-tuning's final epoch (results/isic_ph2_ft) on both test
#     sets, through the evaluation workflow (the inference pipeline plus labels and metrics);
#   - the same weights on the 212 validation images (scripts/compare_weights.py), and the inference option sets with
#     stage 1's model (scripts/select_inference_options.py);
#   - the lesion measurements against PH2's experts (scripts/ph2_criteria_agreement.py) and the card's overlays of
#     the worst and typical test images (scripts/card_overlays.py, into bundle/docs/images; when a different image
#     becomes a worst or typical one, delete the old picture and update the card's links);
#   - the results table, printed, and eval_metrics of configs/metadata.json from the shipped weights' test figures.
#   bash scripts/measure_card.sh [ISIC_DIR] [PH2_DIR] [OUT]
# Every step is skipped when its output exists: run it again after an interruption; delete OUT to measure anew.
set -euo pipefail
cd "$(dirname "$0")/.."
ISIC_DIR=${1:-../shared/data/isic2018}
PH2_DIR=${2:-../shared/data/ph2}
OUT=${3:-runs/card}
SHIPPED=bundle/models/model.pt
STAGE1=results/isic_ph2/model.pt
EPOCH35=results/isic_ph2/snapshots/model_epoch=35.pt
FT=results/isic_ph2_ft/model_epoch=10.pt
VALIDATION=results/isic_ph2_restart/datalist.json  # the same 212 validation images as stage 1's and the fine-tuning's

evaluate () {  # output folder, weights, data folder, split file
    [ -f "$1/metrics.json" ] || python -m monai.bundle run evaluating \
        --config_file "['configs/train.json','configs/evaluate.json']" --dataset_dir "$3" --split_file "$4" \
        --val_fraction 0 --ckpt_path "$2" --output_dir "$1" --num_overlays 0
}

for weights in shipped:$SHIPPED stage1:$STAGE1 ft_epoch10:$FT; do
    name=${weights%%:*} path=${weights#*:}
    evaluate "$OUT/${name}_isic2018_test" "$path" "$ISIC_DIR" data/isic2018_split.json
    evaluate "$OUT/${name}_ph2_test" "$path" "$PH2_DIR" data/ph2_split.json
done
evaluate "$OUT/stage1_epoch35_isic2018_test" "$EPOCH35" "$ISIC_DIR" data/isic2018_split.json
[ -f "$OUT/validation/summary.json" ] || python scripts/compare_weights.py --datalist "$VALIDATION" \
    --weights "$STAGE1" "$SHIPPED" "$FT" --out "$OUT/validation"
[ -f "$OUT/inference_options/summary.json" ] || python scripts/select_inference_options.py \
    --datalist "$VALIDATION" --ckpt_path "$STAGE1" --out "$OUT/inference_options"
python scripts/ph2_criteria_agreement.py --ph2_dir "$PH2_DIR" --ckpt_path "$SHIPPED" \
    --run_dir "$OUT/ph2_measurements" | tee "$OUT/ph2_criteria_agreement.md"
for name in isic2018 ph2; do
    python scripts/card_overlays.py "$OUT/shipped_${name}_test" --ckpt_path "$SHIPPED" --out bundle/docs/images \
        --prefix "$name"
done
python scripts/results_table.py "isic2018_test=$OUT/shipped_isic2018_test/metrics.json" \
    "ph2_test=$OUT/shipped_ph2_test/metrics.json" --metadata configs/metadata.json | tee "$OUT/results_table.md"
python scripts/results_table.py "isic2018_test_stage1=$OUT/stage1_isic2018_test/metrics.json" \
    "ph2_test_stage1=$OUT/stage1_ph2_test/metrics.json" \
    "isic2018_test_ft_epoch10=$OUT/ft_epoch10_isic2018_test/metrics.json" \
    "ph2_test_ft_epoch10=$OUT/ft_epoch10_ph2_test/metrics.json" \
    "isic2018_test_stage1_epoch35=$OUT/stage1_epoch35_isic2018_test/metrics.json" | tee -a "$OUT/results_table.md"
