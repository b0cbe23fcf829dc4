"""Helpers shared by the tests: where the project's read-only material is, and skips when it is not there."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EGEUNET_SHARED", REPO_ROOT.parent / "shared"))
FIXTURE = SHARED / "fixtures" / "egeunet_reference.pt"
PH2_DIR = SHARED / "data" / "ph2"
PH2_SPLIT = SHARED / "data" / "ph2_split.json"
ISIC_DIR = SHARED / "data" / "isic2018"
ISIC_SPLIT = REPO_ROOT / "data" / "isic2018_split.json"
SCHEMA = SHARED / "schema" / "meta_schema_20240725.json"


def require(path: Path) -> Path:
    """Skips the calling test, with the reason, when a file from ``../shared`` is absent (a user's fresh clone)."""
    if not path.exists():
        pytest.skip(f"{path} is not there: it comes with the project's ../shared folder, not with the repository")
    return path


def load_fixture() -> dict:
    return torch.load(require(FIXTURE), weights_only=True)


def fixture_network():
    """The default EGEUNet holding the fixture's weights (strict load), and the fixture's cases."""
    from monai_egeunet import EGEUNet

    fixture = load_fixture()
    net = EGEUNet(in_channels=3, out_channels=1, features=fixture["config"]["c_list"])
    net.load_state_dict(fixture["state_dict"], strict=True)
    return net, fixture["cases"]
