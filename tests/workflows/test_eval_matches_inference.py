"""The evaluation workflow measures what the inference workflow delivers: the same images, weights and options give
the same Dice from ``run evaluating`` as from the masks ``run inference`` writes, scored against the expert masks."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from monai.bundle import ConfigWorkflow
from PIL import Image

from monai_egeunet.data import make_synthetic_dataset
from tests.utils import PH2_DIR, PH2_SPLIT, REPO_ROOT, require

CONFIGS = REPO_ROOT / "configs"
SHIPPED = REPO_ROOT / "bundle" / "models" / "model.pt"


def _dice(pred: np.ndarray, truth: np.ndarray) -> float:
    return 2 * (pred & truth).sum() / (pred.sum() + truth.sum())


def _pairs(source: str, tmp_path: Path) -> list[dict]:
    if source == "ph2":
        ids = json.loads(require(PH2_SPLIT).read_text())["test"][:3]
        ph2 = require(PH2_DIR)
        return [{"image": str(ph2 / "images" / f"{i}.jpg"), "label": str(ph2 / "masks" / f"{i}_lesion.png")}
                for i in ids]
    # photos the test builds: the demo set's lesion-like pictures, not square, so that windows slide and the
    # masks are resized back to another shape
    root = make_synthetic_dataset(tmp_path / "built", num_images=3, image_size=(180, 260), seed=7)
    images = sorted((root / "images").glob("*.png"))
    return [{"image": str(p), "label": str(root / "masks" / f"{p.stem}_lesion.png")} for p in images]


@pytest.mark.parametrize(
    "source, options",
    [("ph2", {}), ("built", {"overlap": 0.5, "fill_holes": True, "flip_tta": True, "scale": 224})],
)
def test_evaluation_gives_the_dice_of_the_inference_masks(tmp_path, monkeypatch, source, options):
    pairs = _pairs(source, tmp_path)
    (tmp_path / "in").mkdir()
    for pair in pairs:
        (tmp_path / "in" / Path(pair["image"]).name).symlink_to(pair["image"])
    # the README's inference command
    cli_options = [a for k, v in options.items() for a in (f"--{k}", json.dumps(v))]
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(CONFIGS / "inference.json"),
           "--dataset_dir", str(tmp_path / "in"), "--output_dir", str(tmp_path / "masks"),
           "--ckpt_path", str(SHIPPED), "--num_workers", "0", *cli_options]
    result = subprocess.run(cmd, cwd=REPO_ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    delivered = {}
    for pair in pairs:
        pred = np.asarray(Image.open(tmp_path / "masks" / f"{Path(pair['image']).stem}_seg.png")) > 0
        truth = np.asarray(Image.open(pair["label"]).convert("L")) > 127
        assert pred.shape == truth.shape  # scored at the mask's resolution
        delivered[pair["image"]] = _dice(pred, truth)
    assert 0.3 < min(delivered.values()) and max(delivered.values()) < 1.0, delivered  # a test that can fail

    # the evaluation workflow on the same images (its test list), weights and options
    (tmp_path / "datalist.json").write_text(json.dumps({"training": pairs, "test": pairs}))
    monkeypatch.chdir(REPO_ROOT)  # where the evaluation config finds configs/inference.json, as the README runs it
    wf = ConfigWorkflow(config_file=[str(CONFIGS / "train.json"), str(CONFIGS / "evaluate.json")],
                        meta_file=str(CONFIGS / "metadata.json"), logging_file=False, workflow_type="eval",
                        bundle_root=str(REPO_ROOT), dataset_dir=str(tmp_path / "datalist.json"), val_fraction=0,
                        ckpt_path=str(SHIPPED), output_dir=str(tmp_path / "eval"), num_workers=0, num_overlays=0,
                        **options)
    wf.initialize()
    wf.run()
    wf.finalize()
    with open(tmp_path / "eval" / "test_mean_dice_raw.csv") as f:
        measured = {row["filename"]: float(row["mean"]) for row in csv.DictReader(f)}
    assert measured.keys() == delivered.keys()
    for image, dice in delivered.items():
        assert abs(measured[image] - dice) < 0.005, (Path(image).name, measured[image], dice)
    summary = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert abs(summary["metrics"]["test_mean_dice"] - np.mean(list(delivered.values()))) < 0.005
    assert {k: summary["inference_options"][k] for k in options} == options
