"""The weights shipped in ``bundle/models/model.pt``, as a user of a fresh clone gets them: the issue's floors on
test photos through the inference workflow (``run inference``, masks written and scored at each photo's size), and
the provenance the inference log names."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from monai_egeunet import EGEUNet
from monai_egeunet.provenance import file_sha256, read_provenance
from tests.bundle.conftest import inference_workflow
from tests.utils import ISIC_DIR, ISIC_SPLIT, PH2_DIR, PH2_SPLIT, REPO_ROOT, require

SHIPPED = REPO_ROOT / "bundle" / "models" / "model.pt"
DEFAULT_EGEUNET_PARAMETERS = 53_374

#: dataset -> (images, masks, mask name of an id, split file, floors). Every test id (495 ISIC, 60 PH2 photos: under
#: a minute on two CPU cores with one window per photo): the floors are for the whole test sets, and a subset's
#: figures differ from them by more than the margins (for version 0.3.0's weights, every 5th ISIC id gave 0.891 /
#: 0.871 where all 495 gave 0.897 / 0.882).
CASES = {
    "isic2018": (ISIC_DIR / "images", ISIC_DIR / "masks", "{}_segmentation.png", ISIC_SPLIT,
                 {"pooled_dice": 0.895, "mean_dice": 0.88}),
    # the figure the shipped weights reach (0.9124), kept from falling; the issue's floor is the next test
    "ph2": (PH2_DIR / "images", PH2_DIR / "masks", "{}_lesion.png", PH2_SPLIT, {"pooled_dice": 0.91}),
}


def test_shipped_weights_are_a_default_egeunet_state_dict():
    state = torch.load(SHIPPED, map_location="cpu", weights_only=True)
    net = EGEUNet()
    net.load_state_dict(state, strict=True)
    assert sum(p.numel() for p in net.parameters()) == DEFAULT_EGEUNET_PARAMETERS
    assert all(torch.isfinite(v).all() for v in state.values())


def test_shipped_weights_say_what_trained_them():
    record = read_provenance(SHIPPED)
    assert record is not None and not record["synthetic_demo"]
    # the second stage's datalist: 1,777 ISIC + 4 x 129 PH2 training photos, the same 212 validation photos
    assert record["training_images"] == 2293 and record["validation_images"] == 212
    assert "ISIC 2018" in record["dataset"] and "PH2" in record["dataset"]
    assert record["sha256"] == file_sha256(SHIPPED)


def _inference_dice(tmp_path: Path, dataset: str) -> dict[str, float]:
    """Pooled and mean Dice of the masks ``run inference`` writes for the test ids of ``dataset``, with the shipped
    weights found as a fresh clone finds them."""
    images, masks, mask_name, split, _ = CASES[dataset]
    ids = json.loads(require(split).read_text())["test"]
    require(images)
    (tmp_path / "in").mkdir()
    for i in ids:
        (tmp_path / "in" / f"{i}.jpg").symlink_to(images / f"{i}.jpg")
    # a fresh clone's layout (no trained models/model.pt): inference finds the shipped weights by itself
    (tmp_path / "bundle" / "models").mkdir(parents=True)
    for f in (SHIPPED, SHIPPED.with_name("model.pt.json")):
        shutil.copy(f, tmp_path / "bundle" / "models" / f.name)
    wf = inference_workflow(bundle_root=str(tmp_path), dataset_dir=str(tmp_path / "in"),
                            output_dir=str(tmp_path / "out"))
    assert wf.parser.get_parsed_content("ckpt_path") == str(tmp_path / "bundle" / "models" / "model.pt")
    wf.run()
    wf.finalize()
    inter = total = 0
    dice = []
    for i in ids:
        pred = np.asarray(Image.open(tmp_path / "out" / f"{i}_seg.png")) > 0
        truth = np.asarray(Image.open(masks / mask_name.format(i)).convert("L")) > 127
        assert pred.shape == truth.shape, i  # scored at the mask's resolution
        inter, total = inter + (pred & truth).sum(), total + pred.sum() + truth.sum()
        dice.append(2 * (pred & truth).sum() / (pred.sum() + truth.sum()))
    return {"pooled_dice": float(2 * inter / total), "mean_dice": float(np.mean(dice))}


@pytest.mark.parametrize("dataset", sorted(CASES))
def test_shipped_weights_reach_the_floors_through_inference(tmp_path, dataset):
    measured = _inference_dice(tmp_path, dataset)
    for key, floor in CASES[dataset][-1].items():
        assert measured[key] >= floor, (dataset, measured)


@pytest.mark.xfail(strict=True, reason="issue #16's PH2 floor (pooled Dice >= 0.925) is not met yet: the shipped "
                                       "weights give 0.9124 (model card); this fails the run once it is met")
def test_shipped_weights_reach_the_ph2_floor_of_the_issue(tmp_path):
    assert _inference_dice(tmp_path, "ph2")["pooled_dice"] >= 0.925
