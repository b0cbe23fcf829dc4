"""Prints the PH2 results table (markdown) from the evaluation workflow's metrics.json files.

    python scripts/results_table.py runs/ph2/test/metrics.json [runs/ph2_unet/test/metrics.json ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

COLUMNS = [
    ("Dice (pooled)", "test_pooled_dice"),
    ("Dice (mean)", "test_mean_dice"),
    ("IoU (pooled)", "test_pooled_iou"),
    ("IoU (mean)", "test_mean_iou"),
    ("Acc (pooled)", "test_pooled_accuracy"),
    ("Sens (pooled)", "test_pooled_sensitivity"),
    ("Spec (pooled)", "test_pooled_specificity"),
    ("HD95 (px, mean)", "test_hd95"),
]


def row(label: str, metrics: dict) -> str:
    cells = []
    for _, key in COLUMNS:
        v = metrics.get(key)
        cells.append("-" if v is None else (f"{v:.1f}" if key == "test_hd95" else f"{v:.4f}"))
    return f"| {label} | " + " | ".join(cells) + " |"


def main(paths: list[str]) -> None:
    print("| model, data | " + " | ".join(c for c, _ in COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    for p in paths:
        summary = json.loads(Path(p).read_text())
        params = int(summary["num_parameters"]) if "num_parameters" in summary else None
        model = summary.get("network", Path(p).parent.parent.name) + (f" ({params:,} parameters)" if params else "")
        label = f"{model}, {Path(p).parent.parent.name}: PH2 test ({summary.get('num_images')} images, full resolution)"
        print(row(label, summary["metrics"]))
    print(row("original EGE-UNet code, same split, final epoch (reported to the project)",
              {"test_pooled_dice": 0.931, "test_mean_dice": 0.927}))
    print(row("paper, ISIC 2017 (another dataset)", {"test_pooled_dice": 0.8877, "test_pooled_iou": 0.7981}))
    print(row("paper, ISIC 2018 (another dataset)", {"test_pooled_dice": 0.8946, "test_pooled_iou": 0.8094}))


if __name__ == "__main__":
    main(sys.argv[1:])
