"""Fixtures of the bundle tests: a checkpoint of this bundle's network, small test images, a bundle workflow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow
from PIL import Image

from monai_egeunet import EGEUNet
from tests.utils import REPO_ROOT

CONFIGS = REPO_ROOT / "configs"
META = CONFIGS / "metadata.json"
INFERENCE = CONFIGS / "inference.json"


def lesion_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """An (H, W, 3) uint8 picture: light skin with a dark rectangle in its top-left quarter, so that any transposition
    or flip of a mask made from it shows."""
    rng = np.random.default_rng(seed)
    img = np.full((height, width, 3), 200, np.uint8)
    img[height // 8 : height // 2, width // 10 : width // 2] = 60
    return (img + rng.integers(0, 12, img.shape, dtype=np.uint8)).astype(np.uint8)


def dark_mask(path: Path) -> np.ndarray:
    """Where the picture at ``path`` is dark, as an (H, W) boolean array read by PIL."""
    return np.asarray(Image.open(path).convert("L")) < 128


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    """A plain state dict of EGEUNet with fixed random weights, like the bundle's ``models/model.pt``."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    torch.save(EGEUNet().state_dict(), path)
    return path


def inference_workflow(**override) -> ConfigWorkflow:
    """The bundle's inference workflow with ``override``s, initialised, run on one worker-less loader."""
    override.setdefault("num_workers", 0)
    config_file = override.pop("config_file", INFERENCE)
    wf = ConfigWorkflow(
        config_file=[str(c) for c in config_file] if isinstance(config_file, (list, tuple)) else str(config_file),
        meta_file=str(override.pop("meta_file", META)),
        logging_file=False,
        workflow_type="infer",
        **override,
    )
    wf.initialize()
    return wf


class DarkIsLesion(torch.nn.Module):
    """A stand-in network whose logits say "lesion" wherever the input is darker than half its range: its masks
    must match the dark pixels of the input file, in the file's own orientation."""

    def __init__(self, intensity_max: float = 1.0) -> None:
        super().__init__()
        self.intensity_max = intensity_max

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 40.0 * (0.5 - x.mean(dim=1, keepdim=True) / self.intensity_max)
