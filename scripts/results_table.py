"""Prints the model card's results table (markdown) from the evaluation workflow's ``metrics.json`` files, and
optionally writes them into a bundle's ``metadata.json`` (``eval_metrics``, one entry per test set).

    python scripts/results_table.py isic2018_test=runs/isic_ph2/isic2018_test/metrics.json \
        ph2_test=runs/isic_ph2/ph2_test/metrics.json [--metadata configs/metadata.json]

Each argument is ``NAME=PATH`` (or a bare path, named after its folder). NAME is the ``eval_metrics`` key; names
starting with ``isic2018`` or ``ph2`` get that test set's reference rows (the original release's code and the
paper, labelled as theirs).
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

#: figures not measured by this repository, for comparison only, by test set
REFERENCES = {
    "isic2018": [
        ("original EGE-UNet code, same 1,978 train ids, epoch 35 of a 50-epoch cosine run, no selection (reported to "
         "the project)", {"test_pooled_dice": 0.895, "test_mean_dice": 0.879}),
        ("paper [1], ISIC 2018: its own split, checkpoint chosen on its test set (theirs)",
         {"test_pooled_dice": 0.8946, "test_pooled_iou": 0.8094}),
        ("paper [1], ISIC 2017: another dataset (theirs)", {"test_pooled_dice": 0.8877, "test_pooled_iou": 0.7981}),
    ],
    "ph2": [
        ("original EGE-UNet code trained on PH2 alone, final epoch (reported to the project)",
         {"test_pooled_dice": 0.931, "test_mean_dice": 0.927}),
    ],
}

DATASETS = {
    "isic2018": "ISIC 2018 Task 1 test ids of data/isic2018_split.json",
    "ph2": "PH2 test ids of data/ph2_split.json",
}


def row(label: str, metrics: dict) -> str:
    cells = []
    for _, key in COLUMNS:
        v = metrics.get(key)
        cells.append("-" if v is None else (f"{v:.1f}" if key == "test_hd95" else f"{v:.4f}"))
    return f"| {label} | " + " | ".join(cells) + " |"


def parse(arguments: list[str]) -> dict[str, Path]:
    named = {}
    for a in arguments:
        name, _, path = a.rpartition("=")
        named[name or Path(path).parent.name] = Path(path)
    return named


def _kind(name: str) -> str | None:
    return next((k for k in REFERENCES if name.startswith(k)), None)


def write_eval_metrics(named: dict[str, Path], metadata_path: str) -> None:
    """Sets ``eval_metrics`` of ``metadata_path``: ``{NAME: {metric: value, ..., "dataset": ...}}``."""
    meta = json.loads(Path(metadata_path).read_text())
    entries = {}
    for name, path in named.items():
        summary = json.loads(path.read_text())
        metrics = {k.removeprefix("test_"): round(v, 4) for k, v in summary["metrics"].items()}
        where = DATASETS.get(_kind(name) or "", name)
        entries[name] = {**metrics, "num_images": summary.get("num_images"),
                         "dataset": f"{where}, scored at the masks' resolution through the inference pipeline"}
    meta["eval_metrics"] = entries
    Path(metadata_path).write_text(json.dumps(meta, indent=4, ensure_ascii=False) + "\n")


def main(named: dict[str, Path]) -> None:
    print("| model, test set | " + " | ".join(c for c, _ in COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    for name, path in named.items():
        summary = json.loads(path.read_text())
        params = int(summary["num_parameters"]) if "num_parameters" in summary else None
        model = summary.get("network", "model") + (f" ({params:,} parameters)" if params else "")
        print(row(f"**{model}, {name}** ({summary.get('num_images')} images)", summary["metrics"]))
        for label, metrics in REFERENCES.get(_kind(name) or "", []):
            print(row(label, metrics))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("metrics", nargs="+", help="NAME=PATH of metrics.json files of the evaluation workflow")
    parser.add_argument("--metadata", help="a metadata.json whose eval_metrics to set from the metrics files")
    args = parser.parse_args()
    named = parse(args.metrics)
    main(named)
    if args.metadata:
        write_eval_metrics(named, args.metadata)
