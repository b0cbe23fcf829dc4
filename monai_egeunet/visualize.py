"""Overlay pictures that let a person check a segmentation by eye: image, ground truth and prediction side by side.

The evaluation workflow saves them with :class:`monai_egeunet.handlers.OverlaySaver`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["overlay_panels", "draw_lesion_axes"]

_TRUTH = (0, 220, 0)
_PRED = (255, 40, 40)


def _outline(mask: np.ndarray) -> np.ndarray:
    """The boundary pixels of a boolean (H, W) mask, 2 px wide so it shows on large photos."""
    inner = mask.copy()
    for axis in (0, 1):
        for shift in (1, -1, 2, -2):
            inner &= np.roll(mask, shift, axis=axis)
    return mask & ~inner


def overlay_panels(
    image: np.ndarray, truth: np.ndarray | None, pred: np.ndarray, measurements: Mapping | None = None
) -> Image.Image:
    """Three panels: the image, the image with the ground truth outlined (green), with the prediction (red).

    Args:
        image: ``(H, W, 3)`` uint8 RGB, as PIL reads it.
        truth: ``(H, W)`` boolean ground truth, or None when there is none.
        pred: ``(H, W)`` boolean prediction.
        measurements: the prediction's lesion measurements
            (:func:`monai_egeunet.measurements.measure_lesion`), to draw its axes and greatest diameter on the
            prediction panel (see :func:`draw_lesion_axes`); None for none.

    Returns:
        A PIL image ``(H, 3W)`` with a small caption on each panel.
    """
    panels = [image.copy()]
    for mask, colour in ((truth, _TRUTH), (pred, _PRED)):
        panel = image.copy()
        if mask is not None:
            tint = panel[mask].astype(np.float32) * 0.75 + np.array(colour, np.float32) * 0.25
            panel[mask] = tint.astype(np.uint8)
            panel[_outline(mask)] = colour
        panels.append(panel)
    out = Image.fromarray(np.concatenate(panels, axis=1))
    w = image.shape[1]
    if measurements is not None:
        draw_lesion_axes(out, measurements, offset=(2 * w, 0))
    draw = ImageDraw.Draw(out)
    for i, text in enumerate(("image", "ground truth", "prediction")):
        draw.text((i * w + 8, 8), text, fill=(255, 255, 255))
    return out


_MAJOR = (255, 220, 0)
_MINOR = (0, 220, 255)
_DIAMETER = (255, 0, 255)


def draw_lesion_axes(picture: Image.Image, measurements: Mapping, offset: tuple[int, int] = (0, 0)) -> Image.Image:
    """Draws a lesion's principal axes (major: yellow, minor: cyan, each as long as the axis of the lesion's
    inertia ellipse, through its centroid) and its greatest diameter (magenta, between its end points) on a picture,
    in place.

    Args:
        picture: the image the lesion was measured on (or a panel of it), a PIL RGB image.
        measurements: a row of :func:`monai_egeunet.measurements.measure_lesion`, measured in the picture's (rows,
            columns); a row without a lesion (empty mask) draws nothing.
        offset: ``(x, y)`` of the measured image's top-left corner in ``picture`` (e.g. a panel's).

    Returns:
        ``picture``.
    """
    if not measurements.get("area_px") or math.isnan(float(measurements.get("centroid_row_px", math.nan))):
        return picture
    draw = ImageDraw.Draw(picture)
    width = max(2, round(max(picture.size) / 300))
    ox, oy = offset
    cx, cy = float(measurements["centroid_col_px"]) + ox, float(measurements["centroid_row_px"]) + oy
    # orientation_deg is counter-clockwise from the horizontal, with rows (y) running down
    a = math.radians(float(measurements["orientation_deg"]))
    for length, (dx, dy), colour in (
        (measurements["major_axis_px"], (math.cos(a), -math.sin(a)), _MAJOR),
        (measurements["minor_axis_px"], (math.sin(a), math.cos(a)), _MINOR),
    ):
        h = float(length) / 2
        draw.line([(cx - h * dx, cy - h * dy), (cx + h * dx, cy + h * dy)], fill=colour, width=width)
    ends = [
        (float(measurements[f"greatest_diameter_col{i}_px"]) + ox, float(measurements[f"greatest_diameter_row{i}_px"]) + oy)
        for i in (0, 1)
    ]
    draw.line(ends, fill=_DIAMETER, width=width)
    r = 2 * width
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=_MAJOR)
    return picture
