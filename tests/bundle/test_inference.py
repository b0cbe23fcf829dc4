"""The bundle's inference workflow (configs/inference.json): masks at the input's size and orientation, formats,
bad inputs skipped and named, the default checkpoint, original-release checkpoints."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, Invertd, ScaleIntensityd
from PIL import Image

from monai_egeunet.inference import check_image, first_existing
from monai_egeunet.transforms import MinMaxScaled, ResizeShortestSide, ResizeShortestSided
from tests.bundle.conftest import INFERENCE, DarkIsLesion, dark_mask, inference_workflow, lesion_image
from tests.utils import PH2_DIR, require


def _write_inputs(folder):
    """Images of several formats and shapes (height != width everywhere); returns their names."""
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(lesion_image(120, 200)).save(folder / "wide.png")
    Image.fromarray(lesion_image(200, 120, seed=1)).save(folder / "tall.jpg", quality=95)
    Image.fromarray(lesion_image(300, 520, seed=2)).convert("L").save(folder / "grey_big.bmp")
    Image.fromarray(lesion_image(90, 150, seed=3)).convert("RGBA").save(folder / "rgba.png")
    Image.fromarray(lesion_image(140, 100, seed=4)).save(folder / "photo.tif")
    return ["wide.png", "tall.jpg", "grey_big.bmp", "rgba.png", "photo.tif"]


def _write_bad_inputs(folder, good: str):
    raw = (folder / good).read_bytes()
    (folder / "corrupt.png").write_bytes(raw[: len(raw) // 2])  # truncated after the header
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.png").write_text("a text file with an image's name\n")
    return ["corrupt.png", "empty.jpg", "notes.png"]


def test_resize_shortest_side_and_inverse():
    assert ResizeShortestSide(256)(torch.rand(3, 768, 576)).shape == (3, 341, 256)
    assert ResizeShortestSide(256)(torch.rand(1, 100, 300)).shape == (1, 256, 768)
    with pytest.raises(ValueError):
        ResizeShortestSide(0)
    pre = Compose([ResizeShortestSided("image", 64)])
    for shape in [(131, 257), (257, 131), (40, 50)]:  # shrinking (area) and enlarging (bilinear)
        d = pre({"image": MetaTensor(torch.rand(3, *shape))})
        assert min(d["image"].shape[1:]) == 64
        d["pred"] = MetaTensor(torch.ones(1, *d["image"].shape[1:]))
        out = Invertd("pred", pre, orig_keys="image", nearest_interp=False)(d)["pred"]
        assert tuple(out.shape) == (1, *shape)
        assert torch.allclose(out, torch.ones_like(out))


def test_shrink_inverse_is_smooth():
    # the inverse of an area reduction interpolates bilinearly: a ramp comes back as a ramp, not as blocks
    pre = Compose([ResizeShortestSided("image", 16)])
    d = pre({"image": MetaTensor(torch.rand(3, 160, 160))})
    d["pred"] = MetaTensor(torch.linspace(0, 1, 16).repeat(16, 1)[None])
    out = Invertd("pred", pre, orig_keys="image", nearest_interp=False)(d)["pred"][0]
    assert len(torch.unique(out[80])) > 100


def test_min_max_scaled_matches_scale_intensity():
    x = MetaTensor(torch.randint(3, 250, (3, 40, 30), dtype=torch.uint8))
    ours = MinMaxScaled("image", maxv=255.0)({"image": x})["image"]
    monai_ = ScaleIntensityd("image", minv=0.0, maxv=255.0)({"image": x})["image"]
    assert ours.dtype == torch.float32 and isinstance(ours, MetaTensor)
    assert torch.allclose(ours, monai_.float(), atol=1e-3)
    y = torch.rand(3, 5, 5)
    before = y.clone()
    MinMaxScaled("image")({"image": y})
    assert torch.equal(y, before), "the input must not be changed in place"


def test_check_image(tmp_path):
    good = _write_inputs(tmp_path)
    for name in good:
        assert check_image(tmp_path / name) is None, name
    bad = _write_bad_inputs(tmp_path, "wide.png")
    reasons = {name: check_image(tmp_path / name) for name in bad}
    assert "truncated" in reasons["corrupt.png"]
    assert "0 bytes" in reasons["empty.jpg"]
    assert "identify" in reasons["notes.png"]
    Image.fromarray(lesion_image(40, 60)).convert("P").save(tmp_path / "palette.png")
    assert "mode" in check_image(tmp_path / "palette.png")
    nib.save(nib.Nifti1Image(np.zeros((32, 40, 3), np.float32), np.eye(4)), tmp_path / "volume.nii.gz")
    assert "2D" in check_image(tmp_path / "volume.nii.gz")


@pytest.mark.parametrize("original_preprocessing", [False, True])
def test_masks_match_input_size_and_orientation(tmp_path, original_preprocessing):
    names = _write_inputs(tmp_path / "in")
    intensity_max = 255.0 if original_preprocessing else 1.0
    wf = inference_workflow(
        dataset_dir=str(tmp_path / "in"),
        output_dir=str(tmp_path / "out"),
        original_preprocessing=original_preprocessing,
        network=DarkIsLesion(intensity_max),
        **{"handlers#0#_disabled_": True},  # the stand-in network has no weights to load
    )
    wf.run()
    wf.finalize()
    for name in names:
        stem = name.rsplit(".", 1)[0]
        mask_file = tmp_path / "out" / f"{stem}_seg.png"
        with Image.open(tmp_path / "in" / name) as src, Image.open(mask_file) as m:
            assert m.size == src.size, name
            assert m.mode == "L"
            mask = np.asarray(m)
        assert set(np.unique(mask)) <= {0, 255}
        agreement = ((mask > 0) == dark_mask(tmp_path / "in" / name)).mean()
        assert agreement > 0.97, (name, agreement)
    report = json.loads((tmp_path / "out" / "inference_report.json").read_text())
    assert len(report["written"]) == len(names) and report["failed"] == {}


def test_bad_files_are_named_and_skipped(tmp_path, checkpoint):
    _write_inputs(tmp_path / "in")
    for name in ["grey_big.bmp", "rgba.png", "photo.tif"]:
        (tmp_path / "in" / name).unlink()
    bad = _write_bad_inputs(tmp_path / "in", "wide.png")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(INFERENCE),
           "--dataset_dir", str(tmp_path / "in"), "--output_dir", str(tmp_path / "out"),
           "--ckpt_path", str(checkpoint), "--num_workers", "0"]
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    log = result.stdout + result.stderr
    assert result.returncode != 0, log
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["tall_seg.png", "wide_seg.png"], log
    last_line = log.strip().splitlines()[-1]
    for name in bad:
        assert name in last_line, last_line
    report = json.loads((tmp_path / "out" / "inference_report.json").read_text())
    assert sorted(report["failed"]) == sorted(bad)
    assert "0 bytes" in report["failed"]["empty.jpg"]

    # the same run in Python, told not to fail: everything written, SystemExit not raised
    wf = inference_workflow(dataset_dir=str(tmp_path / "in"), output_dir=str(tmp_path / "out2"),
                            ckpt_path=str(checkpoint), fail_on_error=False)
    wf.run()
    wf.finalize()
    assert len(list((tmp_path / "out2").glob("*_seg.png"))) == 2


def test_nifti_input_and_output(tmp_path, checkpoint):
    (tmp_path / "in").mkdir()
    img = lesion_image(48, 80).mean(-1).astype(np.float32)  # (H, W) grey
    # NIfTI stores the first axis as x: keep the picture's (H, W) array as the file's (x, y) array
    nib.save(nib.Nifti1Image(img, np.diag([0.5, 0.5, 1.0, 1.0])), tmp_path / "in" / "slice.nii.gz")
    nib.save(nib.Nifti1Image(img[..., None], np.eye(4)), tmp_path / "in" / "single_slice.nii")
    Image.fromarray(lesion_image(60, 90)).save(tmp_path / "in" / "photo.png")
    wf = inference_workflow(dataset_dir=str(tmp_path / "in"), output_dir=str(tmp_path / "out"),
                            ckpt_path=str(checkpoint), output_ext=".nii.gz", save_probabilities=True)
    wf.run()
    wf.finalize()
    for stem, shape in [("slice", (48, 80)), ("single_slice", (48, 80)), ("photo", (90, 60))]:
        seg = nib.load(tmp_path / "out" / f"{stem}_seg.nii.gz")
        assert seg.shape[:2] == shape and int(np.prod(seg.shape)) == shape[0] * shape[1], stem
        assert set(np.unique(np.asarray(seg.dataobj))) <= {0, 1}
        prob = np.asarray(nib.load(tmp_path / "out" / f"{stem}_prob.nii.gz").dataobj)
        assert prob.dtype == np.float32 and prob.min() >= 0 and prob.max() <= 1
    assert np.allclose(nib.load(tmp_path / "out" / "slice_seg.nii.gz").affine[:2, :2], np.diag([0.5, 0.5]))


def test_save_probabilities_png(tmp_path, checkpoint):
    (tmp_path / "in").mkdir()
    Image.fromarray(lesion_image(70, 110)).save(tmp_path / "in" / "a.jpg")
    wf = inference_workflow(dataset_dir=str(tmp_path / "in"), output_dir=str(tmp_path / "out"),
                            ckpt_path=str(checkpoint), save_probabilities=True)
    wf.run()
    wf.finalize()
    with Image.open(tmp_path / "out" / "a_prob.png") as p, Image.open(tmp_path / "out" / "a_seg.png") as m:
        assert p.size == m.size == (110, 70) and p.mode == "L"
        prob, seg = np.asarray(p), np.asarray(m)
    assert ((prob >= 128) == (seg > 0)).mean() > 0.99


def test_default_checkpoint(tmp_path, checkpoint):
    Image.fromarray(lesion_image(64, 64)).save(tmp_path / "a.png")
    (tmp_path / "bundle" / "models").mkdir(parents=True)
    shipped = tmp_path / "bundle" / "models" / "model.pt"
    shipped.write_bytes(checkpoint.read_bytes())
    wf = inference_workflow(bundle_root=str(tmp_path), dataset_dir=str(tmp_path))
    assert wf.parser.get_parsed_content("ckpt_path") == str(shipped)
    (tmp_path / "models").mkdir()
    trained = tmp_path / "models" / "model.pt"
    trained.write_bytes(checkpoint.read_bytes())
    wf = inference_workflow(bundle_root=str(tmp_path), dataset_dir=str(tmp_path))
    assert wf.parser.get_parsed_content("ckpt_path") == str(trained)
    assert first_existing([tmp_path / "none.pt", tmp_path / "other.pt"]) == str(tmp_path / "none.pt")
    assert not wf.check_properties()


def test_original_release_checkpoint_loads_as_is(tmp_path, checkpoint):
    (tmp_path / "in").mkdir()
    Image.fromarray(lesion_image(100, 130)).save(tmp_path / "in" / "a.png")
    state = torch.load(checkpoint, weights_only=True)
    original = tmp_path / "latest.pth"  # how the original release's training loop saves a DataParallel model
    torch.save({"epoch": 3, "model_state_dict": {f"module.{k}": v for k, v in state.items()}}, original)
    masks = []
    for i, ckpt in enumerate([checkpoint, original]):
        wf = inference_workflow(dataset_dir=str(tmp_path / "in"), output_dir=str(tmp_path / f"out{i}"),
                                ckpt_path=str(ckpt), save_probabilities=True)
        wf.run()
        wf.finalize()
        masks.append(np.asarray(Image.open(tmp_path / f"out{i}" / "a_prob.png")))
    assert np.array_equal(masks[0], masks[1])


def test_missing_checkpoint_says_what_to_do(tmp_path):
    (tmp_path / "in").mkdir()
    Image.fromarray(lesion_image(64, 64)).save(tmp_path / "in" / "a.png")
    wf = inference_workflow(bundle_root=str(tmp_path), dataset_dir=str(tmp_path / "in"),
                            output_dir=str(tmp_path / "out"))
    with pytest.raises(Exception) as info:
        wf.run()
    causes, e = [], info.value
    while e is not None:
        causes.append(e)
        e = e.__cause__
    assert any(isinstance(c, FileNotFoundError) and "--ckpt_path" in str(c) for c in causes), causes



def test_ph2_images(tmp_path, checkpoint):
    images = sorted(require(PH2_DIR / "images").glob("*.jpg"))[:2]
    (tmp_path / "in").mkdir()
    for p in images:
        (tmp_path / "in" / p.name).symlink_to(p)
    wf = inference_workflow(dataset_dir=str(tmp_path / "in"), output_dir=str(tmp_path / "out"),
                            ckpt_path=str(checkpoint))
    wf.run()
    wf.finalize()
    for p in images:
        with Image.open(p) as src, Image.open(tmp_path / "out" / f"{p.stem}_seg.png") as m:
            assert m.size == src.size and src.size[0] != src.size[1]
