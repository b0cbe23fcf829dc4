"""The weights shipped in ``bundle/models/model.pt``, as a user of a fresh clone gets them: their PH2 test score
through the bundle's own evaluation workflow, and full-size photographs through the inference workflow."""

from __future__ import annotations

import json
import shutil

import numpy as np
import torch
from monai.bundle import ConfigWorkflow
from PIL import Image

from monai_egeunet import EGEUNet
from tests.bundle.conftest import CONFIGS, inference_workflow
from tests.utils import PH2_DIR, PH2_SPLIT, REPO_ROOT, require

SHIPPED = REPO_ROOT / "bundle" / "models" / "model.pt"
DEFAULT_EGEUNET_PARAMETERS = 53_374


def test_shipped_weights_are_a_default_egeunet_state_dict():
    state = torch.load(SHIPPED, map_location="cpu", weights_only=True)
    net = EGEUNet()
    net.load_state_dict(state, strict=True)
    assert sum(p.numel() for p in net.parameters()) == DEFAULT_EGEUNET_PARAMETERS
    assert all(torch.isfinite(v).all() for v in state.values())


def test_shipped_weights_ph2_test_dice(tmp_path):
    """The issue's floor, measured as the model card's table is: 60 PH2 test images at full resolution."""
    ph2, split = require(PH2_DIR), require(PH2_SPLIT)
    # a fresh clone's layout: no trained models/model.pt, so the default checkpoint is the shipped one
    (tmp_path / "bundle" / "models").mkdir(parents=True)
    shutil.copy(SHIPPED, tmp_path / "bundle" / "models" / "model.pt")
    wf = ConfigWorkflow(
        config_file=[str(CONFIGS / "train.json"), str(CONFIGS / "evaluate.json")],
        meta_file=str(CONFIGS / "metadata.json"),
        logging_file=False,
        workflow_type="eval",
        bundle_root=str(tmp_path),
        output_dir=str(tmp_path / "eval"),
        dataset_dir=str(ph2),
        split_file=str(split),
        num_workers=0,
        num_overlays=0,
    )
    wf.initialize()
    assert wf.parser.get_parsed_content("ckpt_path") == str(tmp_path / "bundle" / "models" / "model.pt")
    wf.run()
    wf.finalize()
    summary = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert summary["num_images"] == 60
    assert (summary["network"], summary["num_parameters"]) == ("EGEUNet", str(DEFAULT_EGEUNET_PARAMETERS))
    assert summary["metrics"]["test_pooled_dice"] >= 0.92, summary["metrics"]
    assert summary["metrics"]["test_mean_dice"] >= 0.92, summary["metrics"]


def test_shipped_weights_segment_a_full_size_ph2_photograph(tmp_path):
    """No --ckpt_path: a fresh clone's inference finds the shipped weights; the mask has the photograph's size and
    agrees with the expert's."""
    image = require(PH2_DIR / "images" / "IMD003.jpg")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / image.name).symlink_to(image)
    wf = inference_workflow(bundle_root=str(REPO_ROOT), dataset_dir=str(tmp_path / "in"),
                            output_dir=str(tmp_path / "out"))
    assert wf.parser.get_parsed_content("ckpt_path") in (str(SHIPPED), str(REPO_ROOT / "models" / "model.pt"))
    wf.run()
    wf.finalize()
    seg = np.asarray(Image.open(tmp_path / "out" / "IMD003_seg.png")) > 0
    truth = np.asarray(Image.open(next((PH2_DIR / "masks").glob("IMD003*")))) > 0
    assert seg.shape == truth.shape == np.asarray(Image.open(image)).shape[:2]
    dice = 2 * (seg & truth).sum() / (seg.sum() + truth.sum())
    assert dice > 0.8, dice
