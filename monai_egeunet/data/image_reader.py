"""A photo reader for ``LoadImage``: MONAI's ``PILReader`` with :func:`~monai_egeunet.transforms.convert_pil_mode`
as its converter and a cheaper axis swap."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from monai.data import PILReader
from monai.utils import MetaKeys
from PIL import Image

from monai_egeunet.transforms import convert_pil_mode

__all__ = ["PhotoReader", "swap_spatial_axes"]


def swap_spatial_axes(data: np.ndarray, first: int = 0) -> np.ndarray:
    """A C-contiguous copy of ``data`` with axes ``first`` and ``first + 1`` swapped.

    The same array as ``np.ascontiguousarray(np.swapaxes(data, first, first + 1))``. For an (H, W, C) photo that copy
    moves C-byte pieces one at a time; transposing each channel as a 2D plane instead is several times cheaper, and it
    is the largest cost of reading a photo after decoding it.

    Args:
        data: an array with at least ``first + 2`` dimensions.
        first: the first of the two axes.

    Returns:
        The swapped copy.

    Example::

        >>> swap_spatial_axes(np.zeros((4, 6, 3), np.uint8)).shape
        (6, 4, 3)
    """
    swapped = np.swapaxes(data, first, first + 1)
    if data.ndim != first + 3:  # no trailing channel axis
        return np.ascontiguousarray(swapped)
    out = np.empty(swapped.shape, dtype=data.dtype)
    for c in range(data.shape[-1]):
        out[..., c] = swapped[..., c]
    return out


class PhotoReader(PILReader):
    """MONAI's ``PILReader`` for photos: PIL modes that are not intensities (palette, CMYK, YCbCr...) are converted by
    :func:`~monai_egeunet.transforms.convert_pil_mode`, and the arrays are those of ``PILReader`` (same shape, values,
    metadata; (W, H) spatial order by default), with the axis swap done per channel (:func:`swap_spatial_axes`).

    Args:
        converter: applied to each opened image; :func:`~monai_egeunet.transforms.convert_pil_mode` by default.
        reverse_indexing: as ``PILReader``: ``True`` gives (W, H) arrays, the spatial order of MONAI's other readers.
        kwargs: passed to ``PILReader`` (and on to ``PIL.Image.open``).

    Example::

        >>> from monai.transforms import LoadImage
        >>> load = LoadImage(reader=PhotoReader(), image_only=True, dtype=None)  # doctest: +SKIP
    """

    def __init__(
        self,
        converter: Callable[[Image.Image], Image.Image] | None = convert_pil_mode,
        reverse_indexing: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(converter=converter, reverse_indexing=False, **kwargs)
        self.swap_axes = reverse_indexing

    def get_data(self, img) -> tuple[np.ndarray, dict]:
        """``PILReader.get_data``: the data array (several images stacked on a new first axis) and metadata of the
        first image."""
        data, meta = super().get_data(img)
        if self.swap_axes:
            # grey images read together are stacked on a new first axis (channel images: along their channels)
            stacked = meta.get(MetaKeys.ORIGINAL_CHANNEL_DIM) == 0
            data = swap_spatial_axes(data, first=1 if stacked else 0)
        return data, meta
