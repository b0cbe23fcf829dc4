from __future__ import annotations

import csv

import numpy as np
import torch
from ignite.engine import Engine
from monai.data import MetaTensor
from PIL import Image

from monai_egeunet.handlers import LesionMeasurementsSaver


def _case(tmp_path, name, lesion):
    """A photo (PIL (W, H) = (90, 60)) with a dark lesion, and the engine's view of it: the image's metadata and the
    masks in MONAI's (1, W, H) order."""
    h, w = 60, 90
    rows, cols = np.mgrid[:h, :w]
    mask = ((rows - 28) / 18.0) ** 2 + ((cols - 40) / 30.0) ** 2 <= 1 if lesion else np.zeros((h, w), bool)
    image = np.full((h, w, 3), (200, 160, 140), np.uint8)
    image[mask] = (80, 50, 40)
    path = tmp_path / f"{name}.png"
    Image.fromarray(image).save(path)
    meta_image = MetaTensor(torch.zeros(3, 32, 32), meta={"filename_or_obj": str(path)})  # the network's input
    pred = torch.as_tensor(mask.T[None].astype(np.float32))
    return {"image": meta_image, "pred": pred, "label": pred[:, ::2, ::2]}  # the label at another size


def _run(tmp_path, batches, **kwargs):
    engine = Engine(lambda e, batch: batch)
    saver = LesionMeasurementsSaver(tmp_path / "out" / "measurements.csv", **kwargs)
    saver.attach(engine)
    engine.run(batches, max_epochs=1)
    with open(tmp_path / "out" / "measurements.csv") as f:
        return list(csv.DictReader(f)), saver


def test_one_row_per_image_and_mask_with_units(tmp_path):
    batches = [[_case(tmp_path, "a", True)], [_case(tmp_path, "b", False)]]
    rows, _ = _run(tmp_path, batches, mask_keys=["pred", "label"])
    assert [(r["image"].rsplit("/", 1)[-1], r["mask"]) for r in rows] == [
        ("a.png", "pred"), ("a.png", "label"), ("b.png", "pred"), ("b.png", "label")]
    a_pred, a_label, b_pred, _ = rows
    assert a_pred["status"] == "ok" and b_pred["status"] == "empty mask"
    assert float(a_pred["area_px"]) == np.count_nonzero(batches[0][0]["pred"].numpy())
    # the ellipse is wider than tall in the picture: its major axis is horizontal, despite MONAI's (W, H) arrays
    assert abs(float(a_pred["orientation_deg"])) < 1.0
    assert abs(float(a_pred["centroid_row_px"]) - 28) < 0.5 and abs(float(a_pred["centroid_col_px"]) - 40) < 0.5
    # the half-size label was resized to the photo before measuring
    assert abs(float(a_label["area_px"]) - float(a_pred["area_px"])) < 0.05 * float(a_pred["area_px"])
    assert a_pred["area_mm2"] == "" and b_pred["greatest_diameter_px"] == ""
    header = list(rows[0])
    assert header[:3] == ["image", "mask", "status"] and "greatest_diameter_px" in header and "area_mm2" in header


def test_a_case_that_fails_gets_a_row_and_the_run_goes_on(tmp_path):
    broken = _case(tmp_path, "gone", True)
    (tmp_path / "gone.png").unlink()
    unread = {"failed_input": {"notes.png": "not an image"}}  # what the inference workflow's skipped inputs give
    rows, _ = _run(tmp_path, [[broken], unread, [_case(tmp_path, "ok", True)]], pixel_spacing_mm=0.02)
    assert len(rows) == 2
    assert rows[0]["status"].startswith("error:") and rows[1]["status"] == "ok"
    assert abs(float(rows[1]["area_mm2"]) - float(rows[1]["area_px"]) * 0.0004) < 1e-6
