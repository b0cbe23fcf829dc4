"""The MONAI Deploy example application (deploy/skin_lesion_seg_app) against the bundle's own inference workflow,
on real PH2 photos. Needs the 'deploy' extra (the MONAI Deploy App SDK); skipped without it."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from monai.bundle import ConfigWorkflow
from PIL import Image

from monai_egeunet.bundle_tools import BUNDLE_NAME, package
from tests.utils import PH2_DIR, REPO_ROOT, require

pytest.importorskip("monai.deploy.operators.monai_bundle_inference_operator",
                    reason="the MONAI Deploy App SDK is not installed (pip install 'monai-egeunet[deploy]')")

APP = REPO_ROOT / "deploy" / "skin_lesion_seg_app"
PHOTOS = ("IMD002", "IMD017")


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def test_deploy_app_masks_match_the_inference_workflow(tmp_path, monkeypatch):
    ph2 = require(PH2_DIR)
    photos = tmp_path / "in"
    photos.mkdir()
    for name in PHOTOS:
        (photos / f"{name}.jpg").write_bytes((ph2 / "images" / f"{name}.jpg").read_bytes())
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 not a photo")  # named in the log and skipped, the rest go on
    bundle = package(REPO_ROOT, output_dir=tmp_path / "dist").parent / BUNDLE_NAME  # the shipped weights

    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    run = subprocess.run([sys.executable, str(APP), "-i", str(photos), "-o", str(tmp_path / "app"), "-m", str(bundle)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "broken.jpg" in run.stdout + run.stderr

    monkeypatch.chdir(bundle)
    wf = ConfigWorkflow(config_file="configs/inference.json", meta_file="configs/metadata.json", logging_file=False,
                        workflow_type="infer", dataset_dir=str(photos), output_dir=str(tmp_path / "workflow"),
                        num_workers=0, fail_on_error=False)
    wf.initialize()
    wf.run()
    wf.finalize()

    assert sorted(p.name for p in (tmp_path / "app").glob("*.png")) == [f"{n}_seg.png" for n in PHOTOS]
    for name in PHOTOS:
        app_mask = np.asarray(Image.open(tmp_path / "app" / f"{name}_seg.png"))
        workflow_mask = np.asarray(Image.open(tmp_path / "workflow" / f"{name}_seg.png"))
        truth = np.asarray(Image.open(ph2 / "masks" / f"{name}_lesion.png")) > 0
        assert app_mask.shape == workflow_mask.shape == truth.shape  # the photo's (H, W): nothing transposed
        assert set(np.unique(app_mask)) <= {0, 255}
        assert _dice(app_mask > 0, workflow_mask > 0) >= 0.99, name
        assert _dice(app_mask > 0, truth) > 0.8, name  # the lesion, where the expert drew it
