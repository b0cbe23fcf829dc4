from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from monai_egeunet.data.synthetic import SYNTHETIC_VERSION, default_synthetic_dir, make_synthetic_dataset

SMALL = {"num_images": 6, "image_size": (96, 128), "seed": 3}


def _names(num_images: int) -> list[str]:
    return [f"SYN_{i:03d}" for i in range(num_images)]


def _load(root: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    with Image.open(root / "images" / f"{name}.png") as im, Image.open(root / "masks" / f"{name}_lesion.png") as m:
        assert im.mode == "RGB" and m.mode == "L"
        return np.asarray(im), np.asarray(m)


def _stats(root: Path) -> dict[str, tuple[int, int]]:
    # The inode changes whenever a file is replaced, even where mtimes are too coarse to tell.
    return {
        p.relative_to(root).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _check_set(root: Path, num_images: int, image_size: tuple[int, int]) -> list[float]:
    height, width = image_size
    fractions = []
    for name in _names(num_images):
        with Image.open(root / "images" / f"{name}.png") as im, Image.open(root / "masks" / f"{name}_lesion.png") as m:
            # PIL reports (width, height).
            assert im.size == (width, height) and m.size == (width, height)
        image, mask = _load(root, name)
        assert image.dtype == np.uint8 and image.shape == (height, width, 3)
        assert mask.dtype == np.uint8 and mask.shape == (height, width)
        assert set(np.unique(mask).tolist()) == {0, 255}
        lesion = mask > 0
        gray = image.astype(np.float64).mean(axis=-1)
        assert gray[lesion].mean() < gray[~lesion].mean(), f"{name}: lesion is not darker than the skin"
        fractions.append(float(lesion.mean()))
    assert all(0.03 <= f <= 0.70 for f in fractions), fractions
    return fractions


def test_layout_and_contents(tmp_path):
    root = make_synthetic_dataset(tmp_path / "syn", **SMALL)
    assert root == tmp_path / "syn"
    assert sorted(p.name for p in (root / "images").iterdir()) == [f"{n}.png" for n in _names(6)]
    assert sorted(p.name for p in (root / "masks").iterdir()) == [f"{n}_lesion.png" for n in _names(6)]
    marker = json.loads((root / "synthetic.json").read_text())
    assert marker == {"version": SYNTHETIC_VERSION, "num_images": 6, "image_size": [96, 128], "seed": 3}
    fractions = _check_set(root, 6, (96, 128))
    assert max(fractions) - min(fractions) > 0.05


def test_default_set(tmp_path):
    root = make_synthetic_dataset(tmp_path)
    assert len(list((root / "images").glob("*.png"))) == 48
    assert len(list((root / "masks").glob("*_lesion.png"))) == 48
    fractions = _check_set(root, 48, (256, 320))
    # Sizes should span small to large lesions, not cluster.
    assert min(fractions) < 0.15 and max(fractions) > 0.4
    assert len({round(f, 3) for f in fractions}) > 40


def test_determinism(tmp_path):
    a = make_synthetic_dataset(tmp_path / "a", **SMALL)
    b = make_synthetic_dataset(tmp_path / "b", **SMALL)
    c = make_synthetic_dataset(tmp_path / "c", **{**SMALL, "seed": 4})
    for name in _names(6):
        mask_file = Path("masks") / f"{name}_lesion.png"
        assert (a / mask_file).read_bytes() == (b / mask_file).read_bytes()
        np.testing.assert_array_equal(_load(a, name)[0], _load(b, name)[0])
    assert any(not np.array_equal(_load(a, n)[0], _load(c, n)[0]) for n in _names(6))
    assert any(not np.array_equal(_load(a, n)[1], _load(c, n)[1]) for n in _names(6))


def test_idempotent(tmp_path):
    root = make_synthetic_dataset(tmp_path, **SMALL)
    before = _stats(root)
    assert len(before) == 13
    assert make_synthetic_dataset(tmp_path, **SMALL) == root
    assert _stats(root) == before
    # No temporary files are left behind.
    assert not [p for p in root.rglob(".*") if p.is_file()]


@pytest.mark.parametrize(
    "change",
    [{"seed": 5}, {"image_size": (64, 96)}, {"num_images": 4}, {"num_images": 8}],
)
def test_regenerates_when_parameters_differ(tmp_path, change):
    make_synthetic_dataset(tmp_path, **SMALL)
    params = {**SMALL, **change}
    make_synthetic_dataset(tmp_path, **params)
    n = params["num_images"]
    # Files of a larger earlier set are removed, so the folder holds exactly the new set.
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == [f"{m}.png" for m in _names(n)]
    assert sorted(p.name for p in (tmp_path / "masks").iterdir()) == [f"{m}_lesion.png" for m in _names(n)]
    marker = json.loads((tmp_path / "synthetic.json").read_text())
    assert marker["seed"] == params["seed"] and marker["num_images"] == n
    assert marker["image_size"] == list(params["image_size"])
    fresh = make_synthetic_dataset(tmp_path / "fresh", **params)
    for name in _names(n):
        np.testing.assert_array_equal(_load(tmp_path, name)[0], _load(fresh, name)[0])
        np.testing.assert_array_equal(_load(tmp_path, name)[1], _load(fresh, name)[1])


def test_regenerates_incomplete_or_foreign_marker(tmp_path):
    root = make_synthetic_dataset(tmp_path, **SMALL)
    (root / "masks" / "SYN_002_lesion.png").unlink()
    make_synthetic_dataset(tmp_path, **SMALL)
    assert (root / "masks" / "SYN_002_lesion.png").is_file()

    marker = json.loads((root / "synthetic.json").read_text())
    (root / "synthetic.json").write_text(json.dumps({**marker, "version": SYNTHETIC_VERSION - 1}))
    before = _stats(root)
    make_synthetic_dataset(tmp_path, **SMALL)
    assert json.loads((root / "synthetic.json").read_text())["version"] == SYNTHETIC_VERSION
    assert _stats(root)["images/SYN_000.png"][0] != before["images/SYN_000.png"][0]

    (root / "synthetic.json").write_text("{not json")
    make_synthetic_dataset(tmp_path, **SMALL)
    assert json.loads((root / "synthetic.json").read_text())["seed"] == SMALL["seed"]


def test_leaves_other_files_alone(tmp_path):
    (tmp_path / "images").mkdir()
    other = tmp_path / "images" / "IMD002.png"
    other.write_bytes(b"not ours")
    make_synthetic_dataset(tmp_path, **SMALL)
    make_synthetic_dataset(tmp_path, **{**SMALL, "num_images": 2})
    assert other.read_bytes() == b"not ours"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_images": 1}, "num_images.*1"),
        ({"num_images": 0}, "num_images.*0"),
        ({"image_size": (31, 64)}, "height.*31"),
        ({"image_size": (64, 16)}, "width.*16"),
        ({"image_size": (64,)}, "image_size"),
        ({"image_size": (64, 64, 3)}, "image_size"),
        ({"seed": -1}, "seed.*-1"),
    ],
)
def test_invalid_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_synthetic_dataset(tmp_path / "bad", **kwargs)
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("kwargs", [{"num_images": 4.0}, {"image_size": (64.0, 64)}, {"seed": True}])
def test_non_integer_arguments(tmp_path, kwargs):
    with pytest.raises(TypeError):
        make_synthetic_dataset(tmp_path, **kwargs)


def test_default_synthetic_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("MONAI_EGEUNET_DATA", str(tmp_path))
    assert default_synthetic_dir() == tmp_path / "synthetic_dermoscopy"
    monkeypatch.delenv("MONAI_EGEUNET_DATA")
    assert default_synthetic_dir() == Path.home() / ".cache" / "monai_egeunet" / "synthetic_dermoscopy"
    assert not (tmp_path / "synthetic_dermoscopy").exists()
