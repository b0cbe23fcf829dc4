"""Prints the PH2 results table (markdown) from the evaluation workflow's metrics.json files, and optionally writes
the first file's metrics into a bundle's ``metadata.json`` (``eval_metrics``).

    python scripts/results_table.py runs/ph2/test/metrics.json [runs/ph2_unet/test/metrics.json ...] \
        [--metadata configs/metadata.json]
"""

from __future__ import annotations

import argparse
import json
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


def write_eval_metrics(metrics_path: str, metadata_path: str) -> None:
    """Sets ``eval_metrics`` of ``metadata_path`` from an evaluation summary (``test_`` prefixes dropped)."""
    summary = json.loads(Path(metrics_path).read_text())
    meta = json.loads(Path(metadata_path).read_text())
    metrics = {k.removeprefix("test_"): round(v, 4) for k, v in summary["metrics"].items()}
    meta["eval_metrics"] = {**metrics, "dataset": f"PH2 test split ({summary.get('num_images')} images, full "
                                                   f"resolution), data/ph2_split.json"}
    Path(metadata_path).write_text(json.dumps(meta, indent=4, ensure_ascii=False) + "\n")


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
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("metrics", nargs="+", help="metrics.json files of the evaluation workflow")
    parser.add_argument("--metadata", help="a metadata.json whose eval_metrics to set from the first metrics file")
    args = parser.parse_args()
    main(args.metrics)
    if args.metadata:
        write_eval_metrics(args.metrics[0], args.metadata)
