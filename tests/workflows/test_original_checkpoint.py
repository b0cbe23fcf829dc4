"""A checkpoint of the original EGE-UNet release, run with its own input scaling, gives its own pipeline's results."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from monai.bundle import ConfigWorkflow
from PIL import Image

from monai_egeunet import EGEUNet
from tests.utils import PH2_DIR, PH2_SPLIT, REPO_ROOT, load_fixture, require


def _original_pipeline(net: EGEUNet, image_path: str, mask_path: str) -> tuple[np.ndarray, np.ndarray]:
    """What the original release does at test time: per-image standardisation then min-max to 0..255 on the (H, W)
    array, bilinear resize of image and mask tensors to 256x256 (torchvision's tensor resize of its time: no
    antialiasing), sigmoid >= 0.5, mask >= 0.5."""
    img = np.asarray(Image.open(image_path).convert("RGB"), dtype=np.float64)
    img = (img - img.mean()) / img.std()
    img = (img - img.min()) / (img.max() - img.min()) * 255.0
    x = F.interpolate(torch.tensor(img).permute(2, 0, 1)[None].float(), (256, 256), mode="bilinear", align_corners=False)
    msk = np.asarray(Image.open(mask_path).convert("L"), dtype=np.float32)[None, None] / 255.0
    y = F.interpolate(torch.from_numpy(msk), (256, 256), mode="bilinear", align_corners=False)
    with torch.no_grad():
        pred = torch.sigmoid(net.eval()(x))
    return (pred[0, 0] >= 0.5).numpy(), (y[0, 0] >= 0.5).numpy()


def test_original_checkpoint_with_original_preprocessing(tmp_path):
    ph2, split = require(PH2_DIR), require(PH2_SPLIT)
    fixture = load_fixture()
    # saved the way the original release's training loop saves latest.pth, from a DataParallel model
    ckpt = tmp_path / "latest.pth"
    torch.save({"epoch": 300, "model_state_dict": {f"module.{k}": v for k, v in fixture["state_dict"].items()}}, ckpt)
    ids = json.loads(split.read_text())["test"][:4]
    pairs = [{"image": str(ph2 / "images" / f"{i}.jpg"), "label": str(ph2 / "masks" / f"{i}_lesion.png")} for i in ids]
    (tmp_path / "datalist.json").write_text(json.dumps({"training": pairs[:2], "test": pairs}))

    wf = ConfigWorkflow(
        config_file=[str(REPO_ROOT / "configs" / "train.json"), str(REPO_ROOT / "configs" / "evaluate.json")],
        meta_file=str(REPO_ROOT / "configs" / "metadata.json"),
        logging_file=False,
        workflow_type="eval",
        bundle_root=str(REPO_ROOT),
        dataset_dir=str(tmp_path / "datalist.json"),
        ckpt_path=str(ckpt),
        output_dir=str(tmp_path / "eval"),
        original_preprocessing=True,
        num_workers=0,
        num_overlays=1,
    )
    wf.initialize()
    wf.run()
    wf.finalize()

    net = EGEUNet()
    net.load_state_dict(fixture["state_dict"])
    tp = fp = fn = 0
    reference = {}
    for pair in pairs:
        pred, truth = _original_pipeline(net, pair["image"], pair["label"])
        inter = np.logical_and(pred, truth).sum()
        reference[pair["image"]] = 2 * inter / (pred.sum() + truth.sum())
        tp, fp, fn = tp + inter, fp + (pred & ~truth).sum(), fn + (~pred & truth).sum()
    assert len(set(np.round(list(reference.values()), 3))) > 1, "degenerate reference: the test could not fail"

    with open(tmp_path / "eval" / "test_mean_dice_raw.csv") as f:
        ours = {row["filename"]: float(row["mean"]) for row in csv.DictReader(f)}
    assert set(ours) == set(reference)
    for name, dice in reference.items():
        assert abs(ours[name] - dice) < 2e-3, (Path(name).name, ours[name], dice)
    summary = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert abs(summary["metrics"]["test_pooled_dice"] - 2 * tp / (2 * tp + fp + fn)) < 2e-3
