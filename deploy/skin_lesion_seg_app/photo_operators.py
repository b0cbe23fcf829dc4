"""The two operators the application adds around the SDK's bundle inference operator: reading photos the way the
bundle's own inference workflow reads them, and writing masks as that workflow writes them."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from monai.transforms import LoadImage
from PIL import Image as PILImage

from monai.deploy.core import Fragment, Image, Operator, OperatorSpec

__all__ = ["PHOTO_EXTENSIONS", "MaskWriterOperator", "PhotoLoaderOperator", "list_photos"]

PHOTO_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
logger = logging.getLogger(__name__)


def list_photos(folder: str | os.PathLike) -> list[Path]:
    """The photos directly in ``folder`` (not in subfolders), sorted by name, like the inference workflow."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"input folder {folder} does not exist")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in PHOTO_EXTENSIONS)


class PhotoLoaderOperator(Operator):
    """Emits one photo per call as an SDK ``Image``, loaded by MONAI's ``LoadImage`` as the bundle's ``LoadImaged``
    would load it.

    The SDK's bundle operator drops the bundle's ``LoadImaged`` and feeds the ``Image`` it receives to the rest of
    the bundle's preprocessing. So the ``Image`` holds what ``LoadImaged`` returns: the array in MONAI's 2D order,
    ``(W, H, C)`` with the channels last (``(W, H)`` for a grey photo), and its metadata, whose
    ``original_channel_dim`` (-1, or ``"no_channel"``) tells the bundle's ``EnsureChannelFirstd`` where the
    channels are; RGBA and grey photos are then made RGB by the bundle's ``EnsureRGBd``, as in its workflow.
    A photo that cannot be read is named in the log and skipped.

    Named output:
        image: ``Image`` of the next photo; its metadata's ``filename_or_obj`` is the photo's path.
    """

    def __init__(self, fragment: Fragment, *args, photos: Sequence[str | os.PathLike], **kwargs) -> None:
        self._photos = [Path(p) for p in photos]
        self._next = 0
        self._load = LoadImage(image_only=True)
        self.failed: list[str] = []
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.output("image")

    def compute(self, op_input, op_output, context) -> None:
        while self._next < len(self._photos):
            path = self._photos[self._next]
            self._next += 1
            try:
                photo = self._load(str(path))
            except Exception as e:  # a batch goes on with the other photos
                logger.error(f"{path}: cannot be read as an image, skipped ({e})")
                self.failed.append(str(path))
                continue
            op_output.emit(Image(photo.numpy(), metadata=dict(photo.meta)), "image")
            return


class MaskWriterOperator(Operator):
    """Writes each mask it receives as ``NAME_seg.png`` (8-bit, 0 skin, 255 lesion, the photo's size and
    orientation), the inference workflow's output, ``NAME`` being the photo's file name without its extension.

    The bundle operator passes the mask on in MONAI's 2D order, ``(W, H)``, with 0/1 values: it is transposed to
    the ``(H, W)`` rows of a picture here.

    Named input:
        seg_image: ``Image`` of a mask, its metadata the photo's (``filename_or_obj``).
    """

    def __init__(self, fragment: Fragment, *args, output_folder: str | os.PathLike, postfix: str = "seg",
                 **kwargs) -> None:
        self.output_folder = Path(output_folder)
        self.postfix = postfix
        self.written: list[str] = []
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("seg_image")

    def compute(self, op_input, op_output, context) -> None:
        seg = op_input.receive("seg_image")
        mask = np.asarray(seg.asnumpy())
        if mask.ndim != 2:
            raise ValueError(f"expected a 2D (W, H) mask from the bundle operator, got shape {mask.shape}")
        name, ext = os.path.splitext(os.path.basename(str(seg.metadata()["filename_or_obj"])))
        if ext == ".gz":
            name = os.path.splitext(name)[0]
        self.output_folder.mkdir(parents=True, exist_ok=True)
        path = self.output_folder / f"{name}_{self.postfix}.png"
        PILImage.fromarray(np.ascontiguousarray(mask.T > 0).astype(np.uint8) * 255).save(path)
        self.written.append(str(path))
        logger.info(f"mask written: {path}")
