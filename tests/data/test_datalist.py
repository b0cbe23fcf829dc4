from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.transforms import EnsureChannelFirstd, LoadImaged
from parameterized import parameterized
from PIL import Image

from monai_egeunet.data import DatasetError, check_pairs, find_pairs, prepare_datalists
from monai_egeunet.transforms import BinarizeMaskd, EnsureRGBd
from tests.utils import PH2_DIR, PH2_SPLIT, require


def _write_pair(image_path: Path, mask_path: Path, size=(40, 30), mode="RGB", mask_values=(0, 255), seed=0):
    """Writes an image (PIL size = (W, H)) and a mask whose lesion is a rectangle in the top-left quarter."""
    rng = np.random.default_rng(seed)
    w, h = size
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    arr = rng.integers(0, 256, (h, w, channels), dtype=np.uint8)
    image_path.parent.mkdir(parents=True, exist_ok=True)
    mask_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr[..., 0] if channels == 1 else arr, mode).save(image_path)
    mask = np.full((h, w), mask_values[0], np.uint8)
    mask[: h // 2, : w // 3] = mask_values[1]
    Image.fromarray(mask).save(mask_path)


def _flat(root: Path, n=5, suffix="_lesion", ext=".jpg"):
    for i in range(n):
        _write_pair(root / "images" / f"IMG{i:03d}{ext}", root / "masks" / f"IMG{i:03d}{suffix}.png", seed=i)
    return root


class TestLayouts:
    @parameterized.expand([["_lesion"], ["_segmentation"], ["_mask"], [""]])
    def test_flat_layout_mask_suffixes(self, suffix):
        root = _flat(Path(self.tmp) / "flat", suffix=suffix)
        items, layout = find_pairs(root)
        assert layout == "images/ + masks/"
        assert [Path(it["image"]).stem for it in items] == [f"IMG{i:03d}" for i in range(5)]
        assert all(Path(it["label"]).stem == Path(it["image"]).stem + suffix for it in items)

    @pytest.fixture(autouse=True)
    def _tmp(self, tmp_path):
        self.tmp = tmp_path

    def test_original_release_layout_keeps_its_split(self):
        root = self.tmp / "isic_orig"
        for split, n in (("train", 4), ("val", 2)):
            for i in range(n):
                _write_pair(root / split / "images" / f"{split}{i}.png", root / split / "masks" / f"{split}{i}.png", seed=i)
        lists = prepare_datalists(root, self.tmp / "out")
        assert len(lists["training"]) == 4 and len(lists["validation"]) == 2
        written = json.loads((self.tmp / "out" / "datalist.json").read_text())
        assert written["layout"] == "original EGE-UNet"

    def test_ph2_nested_layout(self):
        root = self.tmp / "PH2Dataset" / "PH2 Dataset images"
        for i in (3, 10):
            case = root / f"IMD{i:03d}"
            _write_pair(case / f"IMD{i:03d}_Dermoscopic_Image" / f"IMD{i:03d}.bmp",
                        case / f"IMD{i:03d}_lesion" / f"IMD{i:03d}_lesion.bmp", seed=i)
        items, layout = find_pairs(self.tmp / "PH2Dataset")
        assert layout == "PH2" and [it["id"] for it in items] == ["IMD003", "IMD010"]

    def test_isic_archives_layout(self):
        for split, word in (("Training", "Training"), ("Validation", "Validation")):
            for i in range(3):
                name = f"ISIC_{i + (0 if split == 'Training' else 100):07d}"
                _write_pair(self.tmp / "isic" / f"ISIC2018_Task1-2_{word}_Input" / f"{name}.jpg",
                            self.tmp / "isic" / f"ISIC2018_Task1_{word}_GroundTruth" / f"{name}_segmentation.png", seed=i)
        # the 2017 archives ship superpixel maps beside the images: they are not images to segment
        shutil.copy(self.tmp / "isic" / "ISIC2018_Task1_Training_GroundTruth" / "ISIC_0000000_segmentation.png",
                    self.tmp / "isic" / "ISIC2018_Task1-2_Training_Input" / "ISIC_0000000_superpixels.png")
        lists = prepare_datalists(self.tmp / "isic")
        assert len(lists["training"]) == 3 and len(lists["validation"]) == 3
        assert all("ISIC_00001" in it["image"] for it in lists["validation"])

    def test_datalist_json(self):
        root = _flat(self.tmp / "d", n=4)
        items, _ = find_pairs(root)
        dl = {"training": [{"image": str(Path(it["image"]).relative_to(root)), "label": str(Path(it["label"]).relative_to(root))} for it in items[:3]],
              "validation": [{"image": it["image"], "label": it["label"]} for it in items[3:]]}
        (root / "datalist.json").write_text(json.dumps(dl))
        lists = prepare_datalists(root / "datalist.json")
        assert len(lists["training"]) == 3 and len(lists["validation"]) == 1
        assert all(Path(it["image"]).is_absolute() or Path(it["image"]).exists() for it in lists["training"])

    def test_seeded_split_is_repeatable_and_written(self):
        root = _flat(self.tmp / "s", n=10)
        a = prepare_datalists(root, self.tmp / "a", seed=3)
        b = prepare_datalists(root, self.tmp / "b", seed=3)
        c = prepare_datalists(root, seed=4)
        assert a == b and len(a["validation"]) == 3 and len(a["training"]) == 7
        assert a["validation"] != c["validation"]
        again = prepare_datalists(self.tmp / "a" / "datalist.json")
        assert again["training"] == a["training"] and again["validation"] == a["validation"]

    def test_synthetic_default(self, monkeypatch):
        monkeypatch.setenv("MONAI_EGEUNET_DATA", str(self.tmp / "cache"))
        lists = prepare_datalists(None)
        assert len(lists["training"]) + len(lists["validation"]) == 48
        assert (self.tmp / "cache" / "synthetic_dermoscopy" / "images").is_dir()


class TestBadInput:
    @pytest.fixture(autouse=True)
    def _tmp(self, tmp_path):
        self.tmp = tmp_path
        self.root = _flat(tmp_path / "ds", n=4)

    def _expect(self, match, path=None):
        with pytest.raises(DatasetError, match=match):
            prepare_datalists(path or self.root)

    def test_missing_and_empty_folder(self):
        self._expect("does not exist", self.tmp / "nope")
        (self.tmp / "empty").mkdir()
        self._expect("no layout", self.tmp / "empty")
        (self.tmp / "e2" / "images").mkdir(parents=True)
        (self.tmp / "e2" / "masks").mkdir(parents=True)
        self._expect("no image/mask pairs", self.tmp / "e2")

    def test_image_without_mask_and_mask_without_image(self):
        (self.root / "masks" / "IMG001_lesion.png").rename(self.tmp / "moved.png")
        self._expect(r"have no mask.*IMG001\.jpg")
        (self.tmp / "moved.png").rename(self.root / "masks" / "IMG001_lesion.png")
        (self.root / "images" / "IMG002.jpg").unlink()
        self._expect(r"have no image.*IMG002_lesion\.png")

    def test_size_mismatch_names_the_file(self):
        Image.fromarray(np.zeros((31, 40), np.uint8)).save(self.root / "masks" / "IMG003_lesion.png")
        self._expect(r"IMG003_lesion\.png is 40x31 .*IMG003\.jpg is 40x30")

    def test_unreadable_image(self):
        (self.root / "images" / "IMG000.jpg").write_bytes(b"not a jpeg at all")
        self._expect(r"IMG000\.jpg cannot be read")

    def test_zero_byte_mask(self):
        (self.root / "masks" / "IMG000_lesion.png").write_bytes(b"")
        self._expect(r"IMG000_lesion\.png cannot be read")

    def test_non_binary_mask(self):
        Image.fromarray(np.arange(1200, dtype=np.uint8).reshape(30, 40) % 7).save(self.root / "masks" / "IMG001_lesion.png")
        self._expect(r"IMG001_lesion\.png is not binary")

    def test_split_file_with_unknown_ids(self):
        (self.tmp / "split.json").write_text(json.dumps({"train": ["IMG000", "IMG999"], "test": ["IMG001"]}))
        with pytest.raises(DatasetError, match="IMG999"):
            prepare_datalists(self.root, split_file=self.tmp / "split.json")

    def test_bad_val_fraction(self):
        with pytest.raises(ValueError, match="val_fraction"):
            prepare_datalists(self.root, val_fraction=1.5)

    def test_no_validation(self):
        lists = prepare_datalists(self.root, val_fraction=0)
        assert lists["validation"] == [] and len(lists["training"]) == len(find_pairs(self.root)[0])


class TestLoading:
    """Images in every format become 3-channel, masks 0/1, through MONAI's own loader."""

    @parameterized.expand([["RGB", ".jpg"], ["RGBA", ".png"], ["L", ".bmp"], ["RGB", ".tif"], ["L", ".png"]])
    def test_formats(self, mode, ext):
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            img, msk = Path(tmp) / f"a{ext}", Path(tmp) / "a_mask.png"
            _write_pair(img, msk, size=(40, 30), mode=mode, mask_values=(0, 1))
            check_pairs([{"image": str(img), "label": str(msk)}])
            d = LoadImaged(["image", "label"])({"image": str(img), "label": str(msk)})
            d = BinarizeMaskd("label")(EnsureRGBd("image")(EnsureChannelFirstd(["image", "label"])(d)))
            assert d["image"].shape == (3, 40, 30)  # MONAI's 2D axis order is (W, H)
            assert d["label"].shape == (1, 40, 30)
            assert set(torch.unique(d["label"]).tolist()) == {0.0, 1.0}
            # the lesion is the top-left rectangle (rows < 15, cols < 13 in PIL's (H, W)): not transposed
            hw = d["label"][0].numpy().T
            assert hw[:15, :13].all() and not hw[15:, :].any() and not hw[:, 14:].any()

    def test_ensure_rgb_rejects_other_channel_counts(self):
        with pytest.raises(ValueError, match="5 channels"):
            EnsureRGBd("image")({"image": torch.zeros(5, 8, 8)})


def test_ph2_split_and_checks():
    root, split = require(PH2_DIR), require(PH2_SPLIT)
    lists = prepare_datalists(root, split_file=split, val_fraction=0.15)
    assert len(lists["test"]) == 60 and len(lists["training"]) + len(lists["validation"]) == 140
    test_ids = {Path(it["image"]).stem for it in lists["test"]}
    assert test_ids == set(json.loads(split.read_text())["test"])
    assert not test_ids & {Path(it["image"]).stem for it in lists["training"] + lists["validation"]}
