#!/usr/bin/env bash
# Copies a training run's resumable state and results so far into a tracked folder (a session's machine is not
# kept: commit them to resume elsewhere). Resume with:
#   mkdir -p RUN_DIR/models && cp -r DEST/{checkpoint.pt,model.pt,*.pt.json,snapshots} RUN_DIR/models/ && cp DEST/datalist.json RUN_DIR/
#   bash scripts/train_isic_ph2.sh ISIC_DIR PH2_DIR RUN_DIR
#   bash scripts/save_training_progress.sh [RUN_DIR] [DEST]
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_DIR=${1:-runs/isic_ph2}
DEST=${2:-results/isic_ph2}
mkdir -p "$DEST"
cp "$RUN_DIR/models/checkpoint.pt" "$RUN_DIR/models/model.pt" "$RUN_DIR/datalist.json" "$DEST/"
# the weights' provenance records (dataset, epochs, selection), where the run wrote them
for f in "$RUN_DIR"/models/*.pt.json; do [ -f "$f" ] && cp "$f" "$DEST/"; done
[ -d "$RUN_DIR/models/snapshots" ] && cp -r "$RUN_DIR/models/snapshots" "$DEST/"
# the per-epoch lines of the training log: epoch times and validation metrics
cat "$RUN_DIR"/train*.log | tr '\r' '\n' | grep -E "Epoch\[[0-9]+\] (Metrics|Complete)|Current learning rate|new best" \
    | sed 's/.*[0-9]\{4\}-[0-9-]* /&/' > "$DEST/training_log.txt" || true
ls -la "$DEST"
