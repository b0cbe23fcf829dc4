"""The bundle's inference workflow (configs/inference.json): masks at the input's size and orientation, formats and
PIL modes, bad inputs named and skipped, inputs read once, mask names, weights and their provenance, the inference
options (scale, whole image, flips, largest component, holes, threshold), the network's inference form."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.inferers import SimpleInferer
from monai.transforms import Compose, Invertd, ScaleIntensityd
from PIL import Image
from parameterized import parameterized

from monai_egeunet import EGEUNet
from monai_egeunet.handlers import FuseNetwork
from monai_egeunet.inference import InferenceInputs
from monai_egeunet.inferers import FlipTTAInferer
from monai_egeunet.networks import FusedEGEUNet
from monai_egeunet.provenance import write_provenance
from monai_egeunet.transforms import (
    MinMaxScaled,
    RecordIntensityRanged,
    ResizeShortestSide,
    ResizeShortestSided,
    convert_pil_mode,
)
from tests.bundle.conftest import INFERENCE, DarkIsLesion, dark_mask, inference_workflow, lesion_image
from tests.utils import PH2_DIR, require

#: a stand-in network instead of a checkpoint: nothing to load, nothing to fuse
STAND_IN = {"ckpt_path": None, "fuse_network": False}


def _write_inputs(folder):
    """Images of several formats, PIL modes and shapes (height != width everywhere); returns their names."""
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(lesion_image(120, 200)).save(folder / "wide.png")
    Image.fromarray(lesion_image(200, 120, seed=1)).save(folder / "tall.jpg", quality=95)
    Image.fromarray(lesion_image(300, 520, seed=2)).convert("L").save(folder / "grey_big.bmp")
    Image.fromarray(lesion_image(90, 150, seed=3)).convert("RGBA").save(folder / "rgba.png")
    Image.fromarray(lesion_image(140, 100, seed=4)).save(folder / "photo.tif")
    # modes PIL converts to RGB in one call: a palette PNG, a CMYK JPEG, grey with alpha
    Image.fromarray(lesion_image(110, 170, seed=5)).convert("P").save(folder / "palette.png")
    Image.fromarray(lesion_image(150, 90, seed=6)).convert("CMYK").save(folder / "cmyk.jpg", quality=95)
    Image.fromarray(lesion_image(80, 130, seed=7)).convert("LA").save(folder / "grey_alpha.png")
    return ["wide.png", "tall.jpg", "grey_big.bmp", "rgba.png", "photo.tif", "palette.png", "cmyk.jpg",
            "grey_alpha.png"]


def _write_bad_inputs(folder, good: str):
    raw = (folder / good).read_bytes()
    (folder / "corrupt.png").write_bytes(raw[: len(raw) // 2])  # truncated after the header
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.png").write_text("a text file with an image's name\n")
    return ["corrupt.png", "empty.jpg", "notes.png"]


def _run(**override):
    wf = inference_workflow(**override)
    wf.run()
    wf.finalize()
    return wf


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


def test_resize_shortest_side_antialiased():
    """"antialias" shrinks as PyTorch's anti-aliased bilinear interpolation does, and inverts like the others."""
    x = torch.rand(3, 301, 203)
    pre = Compose([ResizeShortestSided("image", 64, downsample_mode="antialias")])
    d = pre({"image": MetaTensor(x)})
    expected = torch.nn.functional.interpolate(x[None], (95, 64), mode="bilinear", antialias=True)[0]
    torch.testing.assert_close(d["image"].as_tensor(), expected)
    d["pred"] = MetaTensor(torch.linspace(0, 1, 64).repeat(95, 1)[None])
    out = Invertd("pred", pre, orig_keys="image", nearest_interp=False)(d)["pred"]
    assert tuple(out.shape) == (1, 301, 203) and len(torch.unique(out[0, 150])) > 100  # bilinear, not blocks
    # enlarging uses ``mode``
    assert ResizeShortestSide(64, downsample_mode="antialias")(torch.rand(1, 40, 50)).shape == (1, 64, 80)


def test_shrink_inverse_is_smooth():
    # the inverse of an area reduction interpolates bilinearly: a ramp comes back as a ramp, not as blocks
    pre = Compose([ResizeShortestSided("image", 16)])
    d = pre({"image": MetaTensor(torch.rand(3, 160, 160))})
    d["pred"] = MetaTensor(torch.linspace(0, 1, 16).repeat(16, 1)[None])
    out = Invertd("pred", pre, orig_keys="image", nearest_interp=False)(d)["pred"][0]
    assert len(torch.unique(out[80])) > 100


@parameterized.expand([[0.0, 255.0], [-1.0, 1.0]])
def test_min_max_scaled_matches_scale_intensity(minv, maxv):
    x = MetaTensor(torch.randint(3, 250, (3, 40, 30), dtype=torch.uint8))
    ours = MinMaxScaled("image", minv=minv, maxv=maxv)({"image": x})["image"]
    monai_ = ScaleIntensityd("image", minv=minv, maxv=maxv)({"image": x})["image"]
    assert ours.dtype == torch.float32 and isinstance(ours, MetaTensor)
    assert torch.allclose(ours, monai_.float(), atol=1e-3)
    y = torch.rand(3, 5, 5)
    before = y.clone()
    MinMaxScaled("image")({"image": y})
    assert torch.equal(y, before), "the input must not be changed in place"


def test_channels_last_photo_is_scaled_and_shrunk_without_a_plane_copy():
    # a reader's (W, H, C) array made channel-first is a channels-last view: min-max keeps that layout (no copy to
    # planes), the anti-aliased shrink reads it as it is, and both give what they give on the planar copy
    x = MetaTensor(torch.randint(0, 255, (400, 300, 3), dtype=torch.uint8)).permute(2, 0, 1)
    x.meta["filename_or_obj"] = "photo.jpg"
    before = x.clone()
    scaled = MinMaxScaled("image")({"image": x})["image"]
    assert scaled.stride() == x.stride() and scaled.dtype == torch.float32
    assert scaled.meta["filename_or_obj"] == "photo.jpg"
    assert torch.equal(x, before)
    planar = MinMaxScaled("image")({"image": x.contiguous()})["image"]
    assert planar.is_contiguous() and torch.equal(scaled, planar)
    resize = ResizeShortestSided("image", 64, downsample_mode="antialias")
    shrunk, shrunk_planar = resize({"image": scaled})["image"], resize({"image": planar})["image"]
    assert shrunk.shape == (3, 85, 64) and shrunk.is_contiguous()
    assert torch.equal(shrunk, shrunk_planar)
    assert [op["class"] for op in shrunk.applied_operations] == ["ResizeShortestSide"]
    assert torch.equal(resize.inverse({"image": shrunk})["image"], resize.inverse({"image": shrunk_planar})["image"])


def test_eight_bit_photo_is_shrunk_in_eight_bits():
    # dtype None: an 8-bit photo is shrunk by PyTorch's 8-bit anti-aliased kernel (no full-size float copy), within a
    # grey level of the float computation; its record inverts a probability map in float, not in 8 bits
    x = MetaTensor(torch.randint(0, 256, (400, 300, 3), dtype=torch.uint8)).permute(2, 0, 1)
    pre = Compose([ResizeShortestSided("image", 64, downsample_mode="antialias", dtype=None)])
    d = pre({"image": x})
    shrunk = d["image"]
    assert shrunk.dtype == torch.uint8 and shrunk.shape == (3, 85, 64)
    plain = x.as_tensor()[None]
    assert torch.equal(shrunk.as_tensor(), torch.nn.functional.interpolate(plain, (85, 64), mode="bilinear",
                                                                             antialias=True)[0])
    in_float = torch.nn.functional.interpolate(plain.float(), (85, 64), mode="bilinear", antialias=True)[0]
    assert (shrunk.as_tensor().float() - in_float).abs().max() <= 1.5
    d["pred"] = MetaTensor(torch.linspace(0, 1, 64).repeat(85, 1)[None])
    out = Invertd("pred", pre, orig_keys="image", nearest_interp=False)(d)["pred"]
    assert out.dtype == torch.float32 and tuple(out.shape) == (1, 400, 300)
    assert len(torch.unique(out[0, 200])) > 100  # not rounded to 8 bits
    # types the 8-bit kernel does not take are computed in float32; floating types are kept
    keep = ResizeShortestSided("image", 64, downsample_mode="antialias", dtype=None)
    grey = torch.randint(0, 256, (1, 100, 90), dtype=torch.uint8).repeat(3, 1, 1)  # EnsureRGBd's planar copy
    assert keep({"image": grey})["image"].dtype == torch.uint8
    assert keep({"image": torch.randint(0, 4096, (3, 100, 90), dtype=torch.int32)})["image"].dtype == torch.float32
    assert keep({"image": torch.rand(3, 100, 90, dtype=torch.float64)})["image"].dtype == torch.float64
    area = ResizeShortestSided("image", 64, downsample_mode="area", dtype=None)
    assert area({"image": torch.randint(0, 256, (3, 100, 90), dtype=torch.uint8)})["image"].dtype == torch.float32
    # the default stays float32
    assert ResizeShortestSided("image", 64, downsample_mode="antialias")({"image": x})["image"].dtype == torch.float32


def test_inference_preprocessing_shrinks_in_eight_bits_and_scales_with_the_photos_extremes():
    # configs/inference.json: the photo's extremes recorded, the photo shrunk in 8 bits, then min-max scaled with
    # those extremes: within a grey level of scaling first and shrinking in float (what ScaleIntensityd + a float
    # resize give), and not the shrunk image's own extremes (which an isolated extreme pixel would change)
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(INFERENCE))
    pixels = torch.randint(40, 200, (700, 520, 3), dtype=torch.uint8)
    pixels[10, 10], pixels[300, 300] = 0, 255  # single extreme pixels, averaged away by the shrink
    # what a reader gives for a 520x700 (H x W) RGB photo: (W, H, C)
    after_loading = Compose(parser.get_parsed_content("preprocessing").transforms[1:])
    out = after_loading({"image": MetaTensor(pixels, meta={"original_channel_dim": -1})})["image"]
    # 700 * 256 / 520 = 344.6: 345 rows, padded to 352 by reflection
    assert out.dtype == torch.float32 and out.shape == (3, 352, 256)
    assert [op["class"] for op in out.applied_operations] == ["ResizeShortestSide", "DivisiblePad"]
    assert out.meta["intensity_range"] == [0.0, 255.0]
    in_float = torch.nn.functional.interpolate(pixels.permute(2, 0, 1)[None].float() / 255, (345, 256),
                                               mode="bilinear", antialias=True)[0]
    assert (out.as_tensor()[:, 3:348] - in_float).abs().max() <= 1.01 / 255
    assert float(out.min()) > 0.1 and float(out.max()) < 0.9  # the photo's extremes, not the shrunk image's


def test_min_max_scaled_with_recorded_range():
    x = MetaTensor(torch.tensor([[[3, 64], [128, 200]]], dtype=torch.uint8))
    recorded = RecordIntensityRanged("image")({"image": x})["image"]
    assert recorded.meta["intensity_range"] == [3.0, 200.0] and torch.equal(recorded, x)
    recorded.meta["intensity_range"] = [0.0, 255.0]  # as if recorded before a shrink
    scaled = MinMaxScaled("image", range_key="intensity_range")({"image": recorded})["image"]
    assert torch.allclose(scaled.as_tensor(), x.as_tensor().float() / 255)
    # without a record (a plain tensor, or a key not recorded): the image's own extremes
    own = MinMaxScaled("image", range_key="intensity_range")({"image": x.as_tensor()})["image"]
    assert float(own.min()) == 0.0 and float(own.max()) == 1.0
    plain = x.as_tensor()
    assert RecordIntensityRanged("image")({"image": plain})["image"] is plain  # nothing to record it in


def test_min_max_scaled_constant_image_is_minv():
    out = MinMaxScaled("image", minv=0.25)({"image": MetaTensor(torch.full((3, 4, 5), 7, dtype=torch.uint8))})
    assert out["image"].dtype == torch.float32 and torch.equal(out["image"], torch.full((3, 4, 5), 0.25))


@parameterized.expand([["P", "RGB"], ["CMYK", "RGB"], ["YCbCr", "RGB"], ["1", "L"], ["L", "L"], ["RGBA", "RGBA"],
                       ["LA", "LA"], ["I;16", "I;16"]])
def test_convert_pil_mode(mode, expected):
    assert convert_pil_mode(Image.new(mode, (4, 3))).mode == expected


@pytest.mark.parametrize("original_preprocessing", [False, True])
def test_masks_match_input_size_and_orientation(tmp_path, original_preprocessing):
    names = _write_inputs(tmp_path / "in")
    intensity_max = 255.0 if original_preprocessing else 1.0
    _run(dataset_dir=str(tmp_path / "in"), output_dir=str(tmp_path / "out"),
         original_preprocessing=original_preprocessing, network=DarkIsLesion(intensity_max), **STAND_IN)
    for name in names:
        stem = name.rsplit(".", 1)[0]
        with Image.open(tmp_path / "in" / name) as src, Image.open(tmp_path / "out" / f"{stem}_seg.png") as m:
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
    for name in ["grey_big.bmp", "rgba.png", "photo.tif", "palette.png", "cmyk.jpg", "grey_alpha.png"]:
        (tmp_path / "in" / name).unlink()
    bad = _write_bad_inputs(tmp_path / "in", "wide.png")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(INFERENCE),
           "--dataset_dir", str(tmp_path / "in"), "--output_dir", str(tmp_path / "out"),
           "--ckpt_path", str(checkpoint), "--num_workers", "1"]
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    log = result.stdout + result.stderr
    assert result.returncode != 0, log
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["tall_seg.png", "wide_seg.png"], log
    last_line = log.strip().splitlines()[-1]
    for name in bad:
        assert name in last_line, last_line
    assert f"weights {checkpoint}" in log, "the log must name the weights file"
    report = json.loads((tmp_path / "out" / "inference_report.json").read_text())
    assert sorted(report["failed"]) == sorted(bad)
    assert "0 bytes" in report["failed"]["empty.jpg"]
    assert "truncated" in report["failed"]["corrupt.png"]
    assert "decoded" in report["failed"]["notes.png"]
    assert report["weights"]["path"] == str(checkpoint)

    # the same run in Python, told not to fail: everything written, SystemExit not raised
    _run(dataset_dir=str(tmp_path / "in"), output_dir=str(tmp_path / "out2"), ckpt_path=str(checkpoint),
         fail_on_error=False)
    assert len(list((tmp_path / "out2").glob("*_seg.png"))) == 2


def test_a_volume_is_refused_by_name(tmp_path):
    (tmp_path / "in").mkdir()
    nib.save(nib.Nifti1Image(np.zeros((32, 40, 3), np.float32), np.eye(4)), tmp_path / "in" / "volume.nii.gz")
    Image.fromarray(lesion_image(64, 64)).save(tmp_path / "in" / "a.png")
    _run(dataset_dir=str(tmp_path / "in"), output_dir=str(tmp_path / "out"), network=DarkIsLesion(),
         fail_on_error=False, **STAND_IN)
    report = json.loads((tmp_path / "out" / "inference_report.json").read_text())
    assert list(report["failed"]) == ["volume.nii.gz"] and "2D" in report["failed"]["volume.nii.gz"]
    assert [os.path.basename(p) for p in report["written"]] == ["a_seg.png"]


def test_every_input_is_read_once(tmp_path, monkeypatch):
    names = _write_inputs(tmp_path / "in")
    opened: dict[str, int] = {}
    real_open = Image.open

    def counting_open(fp, *args, **kwargs):
        key = os.path.basename(str(fp))
        opened[key] = opened.get(key, 0) + 1
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", counting_open)
    # the masks' pipeline; the lesion measurements (an option of their own) read the photo again for its colours
    _run(dataset_dir=str(tmp_path / "in"), output_dir=str(tmp_path / "out"), network=DarkIsLesion(),
         measure_lesions=False, **STAND_IN)
    pil_inputs = [n for n in names if not n.endswith(".tif")]  # TIFF is read by ITK
    assert {n: opened.get(n, 0) for n in pil_inputs} == {n: 1 for n in pil_inputs}


def _zlib_level_flag(png: str) -> int:
    """FLEVEL of a PNG's first IDAT zlib stream: 0 for zlib levels 0-1, 2 for the default level 6."""
    data = open(png, "rb").read()
    idat = data.index(b"IDAT") + 4
    return data[idat + 1] >> 6


@pytest.mark.parametrize("ext, level_flag", [(".png", 0), (".nii.gz", None)])
def test_mask_write_options(tmp_path, ext, level_flag):
    """PNG masks are written at zlib level 1 (binary masks lose a few KB, not seconds); other writers get nothing."""
    Image.fromarray(lesion_image(64, 96)).save(tmp_path / "a.png")
    wf = _run(dataset_dir=str(tmp_path), output_dir=str(tmp_path / "out"), network=DarkIsLesion(), output_ext=ext,
              **STAND_IN)
    saver = wf.parser.get_parsed_content("mask_saver").saver
    assert saver.write_kwargs.get("compress_level") == (1 if ext == ".png" else None)
    if level_flag is not None:
        assert _zlib_level_flag(str(tmp_path / "out" / "a_seg.png")) == level_flag
    else:
        assert (tmp_path / "out" / "a_seg.nii.gz").is_file()


def test_cpu_defaults():
    """On a CPU no loader worker (its process would take cores from the network's threads); one whole-image window
    needs no blending weights, sliding windows keep gaussian ones."""
    from monai.bundle import ConfigParser

    def parsed(**override):
        parser = ConfigParser()
        parser.read_config(str(INFERENCE))
        parser.update({"device": "$torch.device('cpu')", **override})
        return parser

    assert parsed().get_parsed_content("num_workers") == 0
    assert parsed().get_parsed_content("blend_mode") == "constant"
    assert parsed(roi_size=[256, 256]).get_parsed_content("blend_mode") == "gaussian"
    assert parsed(device="$torch.device('cuda:0')").get_parsed_content("num_workers") == min(4, (os.cpu_count() or 2) // 2)


def test_inputs_sharing_a_name_get_distinct_masks(tmp_path):
    (tmp_path / "in").mkdir()
    for i, name in enumerate(["a.jpg", "a.png", "a_jpg.bmp", "b.png", "photo.v2.png"]):
        Image.fromarray(lesion_image(60 + 10 * i, 90, seed=i)).save(tmp_path / "in" / name)
    inputs = InferenceInputs(tmp_path / "in", tmp_path / "out")
    names = {os.path.basename(it["image"]): inputs.mask_path(it["image"]).name for it in inputs.datalist}
    assert names == {"a.jpg": "a_jpg_seg.png", "a.png": "a_png_seg.png", "a_jpg.bmp": "a_jpg_bmp_seg.png",
                     "b.png": "b_seg.png", "photo.v2.png": "photo.v2_seg.png"}
    _run(dataset_dir=str(tmp_path / "in"), output_dir=str(tmp_path / "out"), network=DarkIsLesion(),
         save_probabilities=True, **STAND_IN)
    for image, mask in names.items():
        with Image.open(tmp_path / "in" / image) as src, Image.open(tmp_path / "out" / mask) as m:
            assert m.size == src.size, image  # each mask is its own input's
        assert (tmp_path / "out" / mask.replace("_seg", "_prob")).is_file()
    report = json.loads((tmp_path / "out" / "inference_report.json").read_text())
    assert len(report["written"]) == 5 and report["failed"] == {}


def test_nifti_input_and_output(tmp_path, checkpoint):
    (tmp_path / "in").mkdir()
    img = lesion_image(48, 80).mean(-1).astype(np.float32)  # (H, W) grey
    # NIfTI stores the first axis as x: keep the picture's (H, W) array as the file's (x, y) array
    nib.save(nib.Nifti1Image(img, np.diag([0.5, 0.5, 1.0, 1.0])), tmp_path / "in" / "slice.nii.gz")
    nib.save(nib.Nifti1Image(img[..., None], np.eye(4)), tmp_path / "in" / "single_slice.nii")
    Image.fromarray(lesion_image(60, 90)).save(tmp_path / "in" / "photo.png")
    _run(dataset_dir=str(tmp_path / "in"), output_dir=str(tmp_path / "out"), ckpt_path=str(checkpoint),
         output_ext=".nii.gz", save_probabilities=True)
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
    _run(dataset_dir=str(tmp_path / "in"), output_dir=str(tmp_path / "out"), ckpt_path=str(checkpoint),
         save_probabilities=True)
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
    assert not wf.check_properties()


def test_weights_are_named_with_their_provenance(tmp_path, checkpoint, caplog):
    (tmp_path / "in").mkdir()
    Image.fromarray(lesion_image(64, 96)).save(tmp_path / "in" / "a.png")
    demo = tmp_path / "demo" / "model.pt"
    demo.parent.mkdir()
    demo.write_bytes(checkpoint.read_bytes())
    write_provenance(demo, dataset="synthetic demo set", synthetic_demo=True, epochs=15, max_epochs=15,
                     selection="best val_mean_dice=0.8000 at epoch 15", bundle_version="9.9.9")
    with caplog.at_level(logging.INFO):
        _run(dataset_dir=str(tmp_path / "in"), output_dir=str(tmp_path / "out"), ckpt_path=str(demo))
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert f"weights {demo}: trained on synthetic demo set, 15 of 15 epochs" in logged and "bundle 9.9.9" in logged
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(demo) in w and "synthetic demo set" in w for w in warnings), warnings
    report = json.loads((tmp_path / "out" / "inference_report.json").read_text())
    assert report["weights"]["provenance"]["epochs"] == 15

    # a record left beside other weights is not believed
    torch.save(EGEUNet().state_dict(), demo)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        _run(dataset_dir=str(tmp_path / "in"), output_dir=str(tmp_path / "out2"), ckpt_path=str(demo))
    assert any("describes other weights" in r.getMessage() for r in caplog.records)
    assert not any("synthetic demo set" in r.getMessage() for r in caplog.records)


def test_original_release_checkpoint_loads_as_is(tmp_path, checkpoint):
    (tmp_path / "in").mkdir()
    Image.fromarray(lesion_image(100, 130)).save(tmp_path / "in" / "a.png")
    state = torch.load(checkpoint, weights_only=True)
    original = tmp_path / "latest.pth"  # how the original release's training loop saves a DataParallel model
    torch.save({"epoch": 3, "model_state_dict": {f"module.{k}": v for k, v in state.items()}}, original)
    masks = []
    for i, ckpt in enumerate([checkpoint, original]):
        _run(dataset_dir=str(tmp_path / "in"), output_dir=str(tmp_path / f"out{i}"), ckpt_path=str(ckpt),
             save_probabilities=True)
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


def _blobs_with_a_hole(folder):
    """A light picture with a large dark disc (a light hole in it) and a small dark square far from it."""
    img = np.full((200, 310, 3), 210, np.uint8)
    yy, xx = np.mgrid[:200, :310]
    img[(yy - 100) ** 2 + (xx - 100) ** 2 < 70**2] = 40
    img[(yy - 100) ** 2 + (xx - 100) ** 2 < 15**2] = 210
    img[20:45, 240:265] = 40
    folder.mkdir()
    Image.fromarray(img).save(folder / "blobs.png")


WINDOWS = {"roi_size": [256, 256], "pad_to_multiple_of": 1}


@pytest.mark.parametrize("options", [{}, {"keep_largest_component": True}, {"fill_holes": True},
                                     {"keep_largest_component": True, "fill_holes": True}, {"threshold": 0.999},
                                     {"scale": 128}, {"keep_aspect_ratio": False}, WINDOWS,
                                     {**WINDOWS, "flip_tta": True}, {"flip_tta": True}])
def test_inference_options(tmp_path, options):
    """Each option of the pipeline changes the mask as it says (DarkIsLesion's masks are the dark pixels)."""
    _blobs_with_a_hole(tmp_path / "in")
    net = CountingDarkIsLesion()
    _run(dataset_dir=str(tmp_path / "in"), output_dir=str(tmp_path / "out"), network=net, **STAND_IN, **options)
    mask = np.asarray(Image.open(tmp_path / "out" / "blobs_seg.png")) > 0
    assert mask.shape == (200, 310)
    small, hole, disc = mask[25:40, 245:260].mean(), mask[95:105, 95:105].mean(), mask[100, 40:60].mean()
    assert small == (0.0 if options.get("keep_largest_component") else 1.0), small
    assert hole == (1.0 if options.get("fill_holes") else 0.0), hole
    # DarkIsLesion's logits of the dark disc are 40 * (0.5 - ~0.1): above the logit of 0.999 (6.9) too
    assert disc == 1.0 and mask[5:15, 5:15].sum() == 0
    shapes = {tuple(s) for s in net.shapes}
    flips = 4 if options.get("flip_tta") else 1  # the image and its three flips
    if "roi_size" in options:
        assert shapes == {(2, 3, 256, 256)}, shapes  # 397x256: two windows in one batch
    elif "scale" in options:
        assert shapes == {(1, 3, 224, 128)}, shapes  # the whole image, 198x128, padded to 224x128
    elif options.get("keep_aspect_ratio") is False:
        assert shapes == {(1, 3, 256, 256)}, shapes  # the whole image resized to 256x256, as in training
    else:  # the default: the whole image (397x256, padded to 416x256) in one window
        assert shapes == {(1, 3, 416, 256)}, shapes
    assert net.calls == flips


class CountingDarkIsLesion(DarkIsLesion):
    def __init__(self) -> None:
        super().__init__()
        self.calls, self.shapes = 0, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.shapes.append(x.shape)
        return super().forward(x)


def test_flip_tta_inferer():
    torch.manual_seed(0)
    net = torch.nn.Conv2d(3, 1, 5, padding=2)  # not flip-equivariant: each flip gives another prediction
    x = torch.rand(2, 3, 16, 24)
    with torch.no_grad():
        plain = SimpleInferer()(x, net)
        assert torch.equal(FlipTTAInferer(SimpleInferer(), enabled=False)(x, net), plain)
        tta = FlipTTAInferer(SimpleInferer())(x, net)
        expected = sum(torch.sigmoid(torch.flip(net(torch.flip(x, d)), d)) for d in ([], [2], [3], [2, 3])) / 4
    assert tta.shape == plain.shape and not torch.allclose(tta, plain, atol=1e-3)
    torch.testing.assert_close(torch.sigmoid(tta), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError):
        FlipTTAInferer(SimpleInferer(), spatial_axes=[[]])
    with pytest.raises(ValueError):
        FlipTTAInferer(SimpleInferer(), spatial_axes=[[2]])(x, net)


def test_fuse_network_runs_the_inference_form(tmp_path, checkpoint):
    """fuse_network (the default) runs fuse_for_inference(network) after the weights are loaded, gives the plain
    network's masks, and leaves the evaluator with its plain network; false runs the plain network."""
    (tmp_path / "in").mkdir()
    Image.fromarray(lesion_image(100, 150)).save(tmp_path / "in" / "a.png")
    probs = {}
    for fuse in (True, False):
        wf = _run(dataset_dir=str(tmp_path / "in"), output_dir=str(tmp_path / f"out_{fuse}"), ckpt_path=str(checkpoint),
                  save_probabilities=True, fuse_network=fuse)
        fusers = [h for h in wf.parser.get_parsed_content("handlers") if isinstance(h, FuseNetwork)]
        evaluator, network = wf.parser.get_parsed_content("evaluator"), wf.parser.get_parsed_content("network")
        assert evaluator.network is network
        if fuse:
            assert len(fusers) == 1 and isinstance(fusers[0].fused, FusedEGEUNet)
            # built from the loaded weights: the fused form gives the plain network's output
            x = torch.rand(1, 3, 64, 96)
            with torch.no_grad():
                torch.testing.assert_close(fusers[0].fused(x), network.eval()(x), rtol=1e-3, atol=1e-3)
        else:
            assert not fusers
        probs[fuse] = np.asarray(Image.open(tmp_path / f"out_{fuse}" / "a_prob.png"), dtype=int)
    assert np.abs(probs[True] - probs[False]).max() <= 1


def test_ph2_images(tmp_path, checkpoint):
    images = sorted(require(PH2_DIR / "images").glob("*.jpg"))[:2]
    (tmp_path / "in").mkdir()
    for p in images:
        (tmp_path / "in" / p.name).symlink_to(p)
    _run(dataset_dir=str(tmp_path / "in"), output_dir=str(tmp_path / "out"), ckpt_path=str(checkpoint))
    for p in images:
        with Image.open(p) as src, Image.open(tmp_path / "out" / f"{p.stem}_seg.png") as m:
            assert m.size == src.size and src.size[0] != src.size[1]
