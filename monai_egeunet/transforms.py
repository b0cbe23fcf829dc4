"""Dictionary transforms the bundle needs that MONAI does not have: 3-channel images and binary masks from any file."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform
from monai.utils import convert_to_dst_type

__all__ = ["EnsureRGBd", "BinarizeMaskd"]


class EnsureRGBd(MapTransform):
    """Makes a channel-first image 3-channel: greyscale is repeated, an alpha channel is dropped.

    Dermoscopy files come as RGB JPEGs, RGBA PNGs, greyscale TIFFs...; the network wants 3 channels.

    Args:
        keys: keys of the images to convert (channel-first, after ``EnsureChannelFirstd``).
        allow_missing_keys: do not raise for a missing key.

    Raises:
        ValueError: for an image whose channel count is not 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA); the
            message names the file when the image carries MONAI metadata.

    Example::

        >>> EnsureRGBd("image")({"image": torch.rand(4, 32, 32)})["image"].shape
        torch.Size([3, 32, 32])
    """

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            c = img.shape[0]
            if c in (1, 2):
                d[key] = img[:1].repeat(3, *([1] * (img.ndim - 1)))
            elif c == 4:
                d[key] = img[:3]
            elif c != 3:
                source = getattr(img, "meta", {}).get("filename_or_obj", key)
                raise ValueError(f"{source}: expected a grey, grey+alpha, RGB or RGBA image, got {c} channels")
        return d


class BinarizeMaskd(MapTransform):
    """Turns a channel-first mask of any encoding (0/1, 0/255, RGB white-on-black) into one 0/1 float channel.

    A pixel is foreground when any channel exceeds half the mask's maximum, so 0/1 and 0/255 masks give the same
    result and an all-zero mask stays empty.

    Args:
        keys: keys of the masks.
        allow_missing_keys: do not raise for a missing key.

    Example::

        >>> BinarizeMaskd("label")({"label": torch.tensor([[[0, 255], [255, 0]]])})["label"]
        tensor([[[0., 1.],
                 [1., 0.]]])
    """

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            mask = d[key]
            peak = mask.max()
            fg = mask.amax(dim=0, keepdim=True) > (peak / 2 if peak > 0 else 0)
            d[key] = convert_to_dst_type(fg, mask, dtype=torch.float32)[0]
        return d
