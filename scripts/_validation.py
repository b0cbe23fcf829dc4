"""What the selection scripts share: running the evaluation workflow (the inference pipeline plus labels and
metrics) on the validation list of a training datalist, and its mean Dice per data source.

Used by ``select_inference_options.py`` (which options) and ``select_snapshot.py`` (which weights); never on test
ids: a datalist's ``validation`` list only.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _cli_value(v: object) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)


def evaluate_validation(datalist: Path, ckpt_path: Path, out: Path, overrides: dict | None = None) -> dict:
    """The evaluation workflow's summary (``metrics.json``, plus ``wall_s`` and ``mean_dice_by_source``) of
    ``ckpt_path`` on the validation images of ``datalist`` with inference ``overrides``; not run again when ``out``
    already holds it."""
    metrics = out / "metrics.json"
    if not metrics.exists():
        cmd = [sys.executable, "-m", "monai.bundle", "run", "evaluating",
               "--config_file", "['configs/train.json','configs/evaluate.json']",
               "--dataset_dir", str(datalist), "--ckpt_path", str(ckpt_path),
               "--output_dir", str(out), "--num_overlays", "0"]
        for k, v in (overrides or {}).items():
            cmd += [f"--{k}", _cli_value(v)]
        start = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        summary = json.loads(metrics.read_text())
        summary["wall_s"] = time.perf_counter() - start
        metrics.write_text(json.dumps(summary, indent=2))
    summary = json.loads(metrics.read_text())
    summary["mean_dice_by_source"] = mean_dice_by_source(out, datalist)
    return summary


def mean_dice_by_source(out: Path, datalist: Path) -> dict[str, tuple[float, int]]:
    """Mean Dice and image count per ``source`` of the datalist's validation items (e.g. ISIC's and PH2's photos),
    from the evaluation's per-image CSV in ``out``."""
    sources = {item["image"]: item.get("source", "all") for item in json.loads(datalist.read_text())["validation"]}
    by: dict[str, list[float]] = {}
    with open(out / "test_mean_dice_raw.csv") as f:
        for row in csv.DictReader(f):
            image = os.path.relpath(row["filename"], datalist.parent)
            by.setdefault(sources.get(image, "all"), []).append(float(row["mean"]))
    return {k: (sum(v) / len(v), len(v)) for k, v in sorted(by.items())}
