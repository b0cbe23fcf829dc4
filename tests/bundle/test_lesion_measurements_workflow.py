"""The inference workflow's ``measurements.csv`` (``measure_lesions``), with a stand-in network whose masks are the
dark pixels of the input."""

from __future__ import annotations

import csv
import math

import nibabel as nib
import numpy as np
from PIL import Image

from tests.bundle.conftest import DarkIsLesion, inference_workflow

STAND_IN = {"ckpt_path": None, "fuse_network": False}


def _ellipse_picture(h: int, w: int, angle_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Skin with a dark ellipse (semi-axes min(h, w) / 3 and / 7) whose major axis is ``angle_deg`` counter-clockwise from the
    horizontal; returns the picture and the ellipse."""
    rows, cols = np.mgrid[:h, :w]
    x, y = cols - w / 2, -(rows - h / 2)
    t = math.radians(angle_deg)
    u, v = x * math.cos(t) + y * math.sin(t), -x * math.sin(t) + y * math.cos(t)
    lesion = (u / (min(h, w) / 3)) ** 2 + (v / (min(h, w) / 7)) ** 2 <= 1
    picture = np.full((h, w, 3), (205, 165, 150), np.uint8)
    picture[lesion] = (70, 45, 35)
    return picture, lesion


def _run(**override):
    override.setdefault("measure_lesions", True)
    wf = inference_workflow(network=DarkIsLesion(), **STAND_IN, **override)
    wf.run()
    wf.finalize()


def test_measurements_beside_the_masks(tmp_path):
    (tmp_path / "in").mkdir()
    expected = {}
    for name, (h, w, angle) in {"wide.png": (150, 260, 20.0), "tall.jpg": (240, 160, -35.0)}.items():
        picture, lesion = _ellipse_picture(h, w, angle)
        Image.fromarray(picture).save(tmp_path / "in" / name, quality=95)
        expected[name] = (lesion.sum(), angle)
    _run(dataset_dir=str(tmp_path / "in"), output_dir=str(tmp_path / "out"))
    with open(tmp_path / "out" / "measurements.csv") as f:
        rows = {r["image"].rsplit("/", 1)[-1]: r for r in csv.DictReader(f)}
    assert set(rows) == set(expected)
    for name, (area, angle) in expected.items():
        r = rows[name]
        assert r["mask"] == "pred" and r["status"].startswith("ok")
        assert abs(float(r["area_px"]) - area) < 0.03 * area, name
        # the picture's orientation, not that of MONAI's (W, H) arrays
        assert abs(float(r["orientation_deg"]) - angle) < 2.0, name
        assert r["area_mm2"] == ""  # PNG and JPEG files record no pixel spacing


def test_pixel_spacing_from_nifti_and_the_option(tmp_path):
    (tmp_path / "in").mkdir()
    picture, lesion = _ellipse_picture(120, 200, 0.0)
    # a grey single-slice NIfTI image with 0.04 mm pixels, axes (x, y) = the picture's (columns, rows)
    grey = picture.mean(-1).astype(np.uint8).T[:, :, None]
    img = nib.Nifti1Image(grey, np.diag([0.04, 0.04, 1.0, 1.0]))
    img.header.set_xyzt_units("mm")
    nib.save(img, tmp_path / "in" / "lesion.nii.gz")
    _run(dataset_dir=str(tmp_path / "in"), output_dir=str(tmp_path / "out"))
    with open(tmp_path / "out" / "measurements.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert abs(float(row["area_mm2"]) - float(row["area_px"]) * 0.0016) < 1e-6 * float(row["area_px"])
    assert abs(float(row["greatest_diameter_mm"]) - 0.04 * float(row["greatest_diameter_px"])) < 1e-3
    _run(dataset_dir=str(tmp_path / "in"), output_dir=str(tmp_path / "out2"), pixel_spacing_mm=0.1)
    with open(tmp_path / "out2" / "measurements.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert abs(float(row["area_mm2"]) - float(row["area_px"]) * 0.01) < 1e-6 * float(row["area_px"])


def test_measure_lesions_false_writes_none(tmp_path):
    (tmp_path / "in").mkdir()
    Image.fromarray(_ellipse_picture(100, 140, 0.0)[0]).save(tmp_path / "in" / "a.png")
    _run(dataset_dir=str(tmp_path / "in"), output_dir=str(tmp_path / "out"), measure_lesions=False)
    assert (tmp_path / "out" / "a_seg.png").exists() and not (tmp_path / "out" / "measurements.csv").exists()
