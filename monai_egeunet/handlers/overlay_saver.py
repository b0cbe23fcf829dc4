from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Engine, Events
from PIL import Image

from monai_egeunet.visualize import overlay_panels

__all__ = ["OverlaySaver"]


def _to_hw(x: torch.Tensor | np.ndarray, spatial_order: str, size_hw: tuple[int, int]) -> np.ndarray:
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    # MONAI's PIL/ITK readers give 2D arrays as (W, H): transpose back to PIL's (H, W)
    mask = arr[0] > 0.5 if spatial_order == "HW" else arr[0].T > 0.5
    if mask.shape != size_hw:  # evaluated at the network's size: show it stretched over the photo
        mask = np.asarray(Image.fromarray(mask).resize(size_hw[::-1], Image.NEAREST))
    return mask


class OverlaySaver:
    """Saves overlay pictures (see :func:`monai_egeunet.visualize.overlay_panels`) of the first ``max_images`` cases
    an evaluator sees.

    Reads ``pred`` and ``label`` (channel-first, by default in MONAI's (W, H) axis order; at the original image size
    after ``Invertd``, or at the network's size, then stretched over the photo) and the original file named in the
    image's metadata.

    Args:
        output_dir: where to write ``<image name>_overlay.png``.
        max_images: how many cases to save.
        pred_key: key of the binary prediction.
        label_key: key of the ground truth (skipped when absent).
        image_key: key of the image whose ``filename_or_obj`` metadata names the original file.
        spatial_order: "WH" for MONAI's PIL/ITK axis order, "HW" for arrays already transposed to (H, W).

    Raises:
        ValueError: for a ``spatial_order`` other than "WH" or "HW".

    Example::

        >>> OverlaySaver("eval/overlays", max_images=4).attach(evaluator)  # doctest: +SKIP
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        max_images: int = 8,
        pred_key: str = "pred",
        label_key: str = "label",
        image_key: str = "image",
        spatial_order: str = "WH",
    ) -> None:
        if spatial_order not in ("WH", "HW"):
            raise ValueError(f"spatial_order must be 'WH' or 'HW', got {spatial_order!r}")
        self.spatial_order = spatial_order
        self.output_dir = Path(output_dir)
        self.max_images = max_images
        self.pred_key, self.label_key, self.image_key = pred_key, label_key, image_key
        self.saved = 0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def _reset(self, engine: Engine) -> None:
        self.saved = 0

    def __call__(self, engine: Engine) -> None:
        for item in engine.state.output:
            if self.saved >= self.max_images:
                return
            source = item[self.image_key].meta["filename_or_obj"]
            image = np.asarray(Image.open(source).convert("RGB"))
            pred = _to_hw(item[self.pred_key], self.spatial_order, image.shape[:2])
            truth = _to_hw(item[self.label_key], self.spatial_order, image.shape[:2]) if self.label_key in item else None
            self.output_dir.mkdir(parents=True, exist_ok=True)
            overlay_panels(image, truth, pred).save(self.output_dir / f"{Path(source).stem}_overlay.png")
            self.saved += 1
