from __future__ import annotations

import csv
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Resize

from monai_egeunet.data import PhotoReader
from monai_egeunet.measurements import MEASUREMENT_COLUMNS, LesionMeasurementsd
from monai_egeunet.transforms import EnsureRGBd, EnsureSpatial2Dd

__all__ = ["LesionMeasurementsSaver", "write_measurements_csv", "CSV_COLUMNS"]

logger = logging.getLogger(__name__)

# the CSV's columns: the image, which mask was measured, then the measurements (units in the names: _px, _mm, _mm2,
# _deg; ratios, fractions and counts have none)
CSV_COLUMNS = ("image", "mask", *MEASUREMENT_COLUMNS)


def _cell(value: object) -> object:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return value


def write_measurements_csv(path: str | os.PathLike, rows: Sequence[Mapping]) -> None:
    """Writes measurement rows (``image``, ``mask`` and the keys of ``MEASUREMENT_COLUMNS``) to a CSV file, atomically
    (a reader never sees half a file); values that could not be measured are empty cells."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: _cell(r.get(k, float("nan"))) for k in CSV_COLUMNS})
    os.replace(tmp, path)


class LesionMeasurementsSaver:
    """Writes the ABCD lesion measurements of every mask an engine produces (see
    :func:`monai_egeunet.measurements.measure_lesion`) to one CSV file: one row per image and mask, in the order the
    images came, units in the column names.

    The image is read again from the file named in its metadata (``filename_or_obj``), at its own resolution and
    pixel values: the engine's ``image`` is the network's resized, rescaled input. Masks are read from the engine's
    output (channel-first, binary); a mask of another size than the image (evaluated at the network's size) is
    resized to it (nearest neighbour). A case that cannot be measured gets a row whose ``status`` says why, and the
    others go on; an output without an image (an input the workflow could not read) is passed over.

    Args:
        output_path: the CSV file (written when the engine completes).
        mask_keys: keys of the masks to measure, e.g. ``"pred"``, or ``["pred", "label"]`` for an evaluator's
            predicted and expert masks; the ``mask`` column names the key.
        image_key: key of the image whose metadata names its file.
        pixel_spacing_mm: spacing in mm (one number, or ``(row, col)`` of the picture) overriding the files' metadata.
        spatial_order: ``"WH"`` for masks in MONAI's PIL/ITK axis order (the images' as loaded), ``"HW"`` for masks
            transposed to (rows, columns).

    Example::

        >>> LesionMeasurementsSaver("eval/measurements.csv", mask_keys=["pred", "label"]).attach(evaluator)  # doctest: +SKIP
    """

    def __init__(
        self,
        output_path: str | os.PathLike,
        mask_keys: Sequence[str] | str = "pred",
        image_key: str = "image",
        pixel_spacing_mm: Sequence[float] | float | None = None,
        spatial_order: str = "WH",
    ) -> None:
        if spatial_order not in ("WH", "HW"):
            raise ValueError(f"spatial_order must be 'WH' or 'HW', got {spatial_order!r}")
        self.output_path = Path(output_path)
        self.mask_keys = [mask_keys] if isinstance(mask_keys, str) else list(mask_keys)
        self.image_key = image_key
        self.spatial_order = spatial_order
        self.load = Compose(
            [
                # read as the workflows read it (palette PNGs, CMYK JPEGs... as RGB), at its own pixel values
                LoadImaged("image", reader=PhotoReader(), image_only=True, dtype=None),
                EnsureChannelFirstd("image"),
                EnsureSpatial2Dd("image"),
                EnsureRGBd("image"),
            ]
        )
        self.measure = LesionMeasurementsd(self.mask_keys, "image", pixel_spacing_mm, allow_missing_keys=True)
        self.rows: list[dict] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)
        engine.add_event_handler(Events.COMPLETED, self._write)

    def _reset(self, engine: Engine) -> None:
        self.rows = []

    def _write(self, engine: Engine) -> None:
        write_measurements_csv(self.output_path, self.rows)
        logger.info(f"lesion measurements of {len(self.rows)} masks written to {self.output_path}")

    def __call__(self, engine: Engine) -> None:
        output = engine.state.output
        for item in output if isinstance(output, (list, tuple)) else [output]:
            if not isinstance(item, Mapping) or self.image_key not in item:
                continue  # an input that could not be read (the inference report names it)
            source = str(item[self.image_key].meta["filename_or_obj"])
            try:
                rows = self.measure_item(source, item)
            except Exception as e:  # one unmeasurable case must not stop a batch run
                logger.warning(f"{source}: lesion measurements failed: {e}")
                rows = [{"image": source, "mask": k, "status": f"error: {e}"} for k in self.mask_keys if k in item]
            self.rows.extend(rows)

    def measure_item(self, source: str, item: Mapping) -> list[dict]:
        """The measurement rows of one case: the image file ``source`` and the masks in ``item``."""
        data = self.load({"image": source})
        size = tuple(data["image"].shape[1:])
        keys = [k for k in self.mask_keys if k in item]
        for k in keys:
            mask = item[k].detach().cpu() if isinstance(item[k], torch.Tensor) else torch.as_tensor(np.asarray(item[k]))
            mask = (mask > 0.5).float()
            if self.spatial_order == "HW":
                mask = mask.transpose(1, 2)
            if tuple(mask.shape[1:]) != size:
                mask = Resize(size, mode="nearest")(mask)
            data[k] = mask
        out = self.measure(data)
        return [{"image": source, "mask": k, **out[f"{k}_measurements"]} for k in keys]
