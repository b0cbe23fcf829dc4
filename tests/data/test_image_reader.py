"""PhotoReader: the arrays and metadata of MONAI's PILReader (with convert_pil_mode), from a cheaper axis swap."""

from __future__ import annotations

import numpy as np
import pytest
from monai.data import PILReader
from monai.transforms import LoadImage
from PIL import Image

from monai_egeunet.data import PhotoReader, swap_spatial_axes
from monai_egeunet.transforms import convert_pil_mode

RNG = np.random.default_rng(0)
CASES = [
    ["rgb", Image.fromarray(RNG.integers(0, 256, (7, 5, 3), dtype=np.uint8))],
    ["grey", Image.fromarray(RNG.integers(0, 256, (7, 5), dtype=np.uint8))],
    ["rgba", Image.fromarray(RNG.integers(0, 256, (7, 5, 4), dtype=np.uint8))],
    ["palette", Image.fromarray(RNG.integers(0, 256, (7, 5, 3), dtype=np.uint8)).convert("P")],
    ["16-bit grey", Image.fromarray(RNG.integers(0, 60000, (7, 5)).astype(np.uint16))],
]


def _load(reader, files):
    return LoadImage(reader=reader, image_only=False, dtype=None)(files)


@pytest.mark.parametrize("name, image", CASES, ids=[c[0] for c in CASES])
def test_same_as_pil_reader(name, image, tmp_path):
    path = str(tmp_path / "image.png")
    image.save(path)
    for files in (path, [path, path]):  # one image; two read together (stacked or concatenated)
        expected, expected_meta = _load(PILReader(converter=convert_pil_mode), files)
        got, meta = _load(PhotoReader(), files)
        assert got.shape == expected.shape and got.dtype == expected.dtype
        assert np.array_equal(np.asarray(got), np.asarray(expected)), (name, files)
        assert got.is_contiguous()
        assert {k: str(v) for k, v in meta.items()} == {k: str(v) for k, v in expected_meta.items()}


def test_reverse_indexing_false_keeps_numpy_order(tmp_path):
    array = RNG.integers(0, 256, (7, 5, 3), dtype=np.uint8)
    Image.fromarray(array).save(tmp_path / "a.png")
    got, _ = _load(PhotoReader(reverse_indexing=False), str(tmp_path / "a.png"))
    assert np.array_equal(np.asarray(got), array)


@pytest.mark.parametrize("shape, first", [((4, 6), 0), ((4, 6, 3), 0), ((2, 4, 6), 1), ((2, 4, 6, 3), 1)])
def test_swap_spatial_axes(shape, first):
    data = np.arange(np.prod(shape), dtype=np.int32).reshape(shape)
    got = swap_spatial_axes(data, first)
    assert got.flags["C_CONTIGUOUS"]
    assert np.array_equal(got, np.swapaxes(data, first, first + 1))
