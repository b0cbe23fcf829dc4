"""Lesion measurements of the dermoscopic ABCD rule (asymmetry, border, colours, diameter) from an image and a
binary lesion mask, and the dictionary transform :class:`LesionMeasurementsd` that adds them to a workflow's data.

These are measurements to support a reader of the image, not a diagnosis.

Conventions:

- Arrays are ``(rows, columns)`` as a picture is displayed (row 0 at the top). :class:`LesionMeasurementsd` takes
  MONAI's channel-first arrays, whose PIL/ITK-read 2D images are ``(C, W, H)``, and transposes them back
  (``spatial_order="WH"``), so that coordinates and angles are the picture's. Areas, lengths, asymmetry and colours
  do not depend on the transposition; the centroid, the orientation and the diameter's end points do.
- The lesion is the largest connected region (8-connectivity) of the mask, its holes filled; ``num_components``
  says how many regions the mask had.
- Lengths are in pixels (``*_px``) and, when the pixel spacing is known, in millimetres (``*_mm``, ``*_mm2``).

The colour prototypes and presence thresholds (:data:`COLOUR_PROTOTYPES_LAB`, :data:`COLOUR_MIN_FRACTION`) and the
asymmetry weighting (:data:`COLOUR_ASYMMETRY_SCALE`, :data:`ASYMMETRY_AXIS_THRESHOLD`) were set on the 140 training
images of the project's PH2 split (``data/ph2_split.json``) and their expert masks only;
``scripts/ph2_criteria_agreement.py --tune`` recomputes them.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data.utils import affine_to_spacing
from monai.transforms import MapTransform
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError
from scipy.spatial.distance import pdist, squareform
from skimage.color import lab2rgb, rgb2lab
from skimage.measure import find_contours, inertia_tensor, inertia_tensor_eigvals, moments, perimeter_crofton, regionprops
from skimage.transform import downscale_local_mean, resize

__all__ = [
    "DERMOSCOPIC_COLOURS",
    "COLOUR_PROTOTYPES_LAB",
    "COLOUR_MIN_FRACTION",
    "REFERENCE_SKIN_LAB",
    "TEXTBOOK_COLOURS_LAB",
    "COLOUR_ASYMMETRY_SCALE",
    "ASYMMETRY_AXIS_THRESHOLD",
    "SECTOR_SOLIDITY_THRESHOLD",
    "MEASUREMENT_COLUMNS",
    "lesion_region",
    "fold_mismatch",
    "colour_fractions",
    "lesion_lab",
    "measure_lesion",
    "pixel_spacing_from_meta",
    "LesionMeasurementsd",
]

DERMOSCOPIC_COLOURS = ("white", "red", "light_brown", "dark_brown", "blue_gray", "black")

# The reference skin every image's colours are normalised to (CIELAB; about the median skin around the PH2 lesions).
REFERENCE_SKIN_LAB = (72.0, 12.0, 15.0)
# Textbook CIELAB of the dermoscopic colours, where the tuning of COLOUR_PROTOTYPES_LAB starts.
TEXTBOOK_COLOURS_LAB: dict[str, tuple[float, float, float]] = {
    "white": (85.0, 2.0, 6.0),
    "red": (50.0, 42.0, 25.0),
    "light_brown": (55.0, 18.0, 28.0),
    "dark_brown": (35.0, 16.0, 16.0),
    "blue_gray": (45.0, 0.0, -6.0),
    "black": (15.0, 3.0, 2.0),
    "skin": REFERENCE_SKIN_LAB,
}
# CIELAB (D65 white, 2-degree observer: skimage.color.rgb2lab of sRGB) of each dermoscopic colour in images
# normalised to the reference skin: the textbook colours moved by a coordinate search (steps of 8, 4, 2) that
# maximised the six colours' mean Youden index against the experts on the PH2 training ids (0.458 -> 0.566). "skin"
# takes the lesion pixels that look like the surrounding skin (lesion margins) and counts for no colour.
COLOUR_PROTOTYPES_LAB: dict[str, tuple[float, float, float]] = {
    "white": (87.0, 8.0, 6.0),
    "red": (74.0, 46.0, 45.0),
    "light_brown": (47.0, 26.0, 28.0),
    "dark_brown": (27.0, 24.0, 20.0),
    "blue_gray": (53.0, 4.0, 6.0),
    "black": (19.0, 3.0, 2.0),
    "skin": REFERENCE_SKIN_LAB,
}
# A colour is present when at least this fraction of the lesion's pixels is nearest to it (per colour, the threshold
# with the best Youden index on the PH2 training ids).
COLOUR_MIN_FRACTION: dict[str, float] = {
    "white": 0.0012,
    "red": 0.0668,
    "light_brown": 0.5307,
    "dark_brown": 0.0163,
    "blue_gray": 0.0244,
    "black": 0.0134,
}
# Per axis, asymmetry = shape mismatch + (mean colour difference between mirror pixels, CIE76) / this scale (the best
# of 5 to 60 for the AUC of fully asymmetric vs symmetric lesions on the PH2 training ids; 10 to 30 are within 0.01).
COLOUR_ASYMMETRY_SCALE = 20.0
# An axis counts as asymmetric when its asymmetry exceeds this (the best agreement of the count with the experts'
# grade on the PH2 training ids).
ASYMMETRY_AXIS_THRESHOLD = 0.55
# A border sector counts as irregular when the lesion fills less than this fraction of its convex hull there.
SECTOR_SOLIDITY_THRESHOLD = 0.9

MEASUREMENT_COLUMNS = (
    "status",
    "area_px",
    "area_mm2",
    "area_fraction",
    "perimeter_px",
    "perimeter_mm",
    "equivalent_diameter_px",
    "equivalent_diameter_mm",
    "greatest_diameter_px",
    "greatest_diameter_mm",
    "major_axis_px",
    "minor_axis_px",
    "major_axis_mm",
    "minor_axis_mm",
    "orientation_deg",
    "centroid_row_px",
    "centroid_col_px",
    "greatest_diameter_row0_px",
    "greatest_diameter_col0_px",
    "greatest_diameter_row1_px",
    "greatest_diameter_col1_px",
    "border_irregularity",
    "solidity",
    "irregular_border_sectors",
    "shape_asymmetry_major_axis",
    "shape_asymmetry_minor_axis",
    "colour_asymmetry_major_axis",
    "colour_asymmetry_minor_axis",
    "shape_asymmetry",
    "asymmetry_score",
    "asymmetric_axes",
    *(f"fraction_{c}" for c in DERMOSCOPIC_COLOURS),
    *DERMOSCOPIC_COLOURS,
    "colour_count",
    "touches_border",
    "fills_image",
    "num_components",
    "pixel_spacing_row_mm",
    "pixel_spacing_col_mm",
)


def lesion_region(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """The lesion a measurement is made on: the largest 8-connected region of ``mask``, holes filled.

    Args:
        mask: ``(H, W)`` array, nonzero is lesion.

    Returns:
        The boolean lesion mask and the number of connected regions ``mask`` had (0 for an empty mask).
    """
    labels, n = ndimage.label(np.asarray(mask) > 0, structure=np.ones((3, 3), bool))
    if n == 0:
        return np.zeros(labels.shape, bool), 0
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    largest = int(sizes.argmax())
    rows, cols = ndimage.find_objects(labels, max_label=largest)[largest - 1]
    # holes: the background regions (4-connected) of the padded box that do not reach its edge (a cheaper
    # binary_fill_holes on large photographs)
    box = np.pad(labels[rows, cols] == largest, 1)
    background, _ = ndimage.label(~box)
    outside = np.zeros(background.max() + 1, bool)
    outside[np.unique(np.concatenate([background[0], background[-1], background[:, 0], background[:, -1]]))] = True
    outside[0] = False
    lesion = np.zeros(labels.shape, bool)
    lesion[rows, cols] = ~outside[background][1:-1, 1:-1]
    return lesion, int(n)


def _mirror(points: np.ndarray, centroid: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """``(N, 2)`` points mirrored about the line through ``centroid`` along ``direction``."""
    u = direction / np.linalg.norm(direction)
    d = points - centroid
    return centroid + 2.0 * (d @ u)[:, None] * u - d


def fold_mismatch(mask: np.ndarray, centroid: Sequence[float], direction: Sequence[float]) -> float:
    """How much a mask differs from its mirror image about a line: area of (mask XOR mirrored mask) / area of mask.

    0 for a mask symmetric about the line, up to 2 when the mirror image misses the mask entirely. The mirrored mask
    is sampled with bilinear interpolation; digitisation adds up to about 1 / (the lesion's radius in pixels).

    Args:
        mask: ``(H, W)`` boolean mask.
        centroid: ``(row, col)`` point the line goes through.
        direction: ``(row, col)`` vector along the line.

    Returns:
        The mismatch; NaN for an empty mask.
    """
    pts = np.argwhere(mask).astype(np.float64)
    if len(pts) == 0:
        return float("nan")
    mirrored = _mirror(pts, np.asarray(centroid, np.float64), np.asarray(direction, np.float64))
    overlap = ndimage.map_coordinates(mask.astype(np.float32), mirrored.T, order=1, mode="constant", cval=0.0)
    return float(2.0 * (1.0 - overlap.sum() / len(pts)))


def _colour_fold_difference(mask: np.ndarray, lab: np.ndarray, centroid: np.ndarray, direction: np.ndarray) -> float:
    """Mean CIE76 difference between the colour of each lesion pixel and that of its mirror pixel about a line, over
    the pixels whose mirror is in the lesion too (NaN when there are none)."""
    pts = np.argwhere(mask).astype(np.float64)
    if len(pts) == 0:
        return float("nan")
    mirrored = _mirror(pts, centroid, direction)
    inside = ndimage.map_coordinates(mask.astype(np.float32), mirrored.T, order=1, cval=0.0) >= 0.5
    if not inside.any():
        return float("nan")
    here = lab[mask][inside]
    there = np.stack([ndimage.map_coordinates(lab[..., i], mirrored[inside].T, order=1) for i in range(3)], -1)
    return float(np.sqrt(((here - there) ** 2).sum(-1)).mean())


def colour_fractions(lab: np.ndarray, prototypes: Mapping[str, Sequence[float]] | None = None) -> dict[str, float]:
    """The fraction of a lesion's pixels nearest (CIE76 colour difference) to each dermoscopic colour.

    Args:
        lab: ``(N, 3)`` CIELAB values of the lesion's pixels, normalised to the reference skin (:func:`lesion_lab`).
        prototypes: CIELAB of each of :data:`DERMOSCOPIC_COLOURS`, and optionally of ``"skin"`` (pixels nearest to it
            count for no colour); :data:`COLOUR_PROTOTYPES_LAB` by default.

    Returns:
        ``{colour: fraction of the N pixels}`` for the six colours (NaN for no pixels).
    """
    protos = dict(COLOUR_PROTOTYPES_LAB if prototypes is None else prototypes)
    names = list(protos)
    centres = np.asarray([protos[n] for n in names], np.float32)
    lab = np.asarray(lab, np.float32).reshape(-1, 3)
    if len(lab) == 0:
        return {c: float("nan") for c in DERMOSCOPIC_COLOURS}
    nearest = ((lab[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)
    counts = np.bincount(nearest, minlength=len(names))
    return {c: float(counts[names.index(c)] / len(lab)) for c in DERMOSCOPIC_COLOURS}


def _srgb_to_linear(rgb: np.ndarray) -> np.ndarray:
    return np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)


def _linear_to_srgb(lin: np.ndarray) -> np.ndarray:
    lin = np.clip(lin, 0.0, 1.0)
    return np.where(lin <= 0.0031308, lin * 12.92, 1.055 * lin ** (1 / 2.4) - 0.055)


def _image_max(image: np.ndarray) -> float:
    """Full intensity of an image: its integer type's maximum, else 1.0 for floats within [0, 1], else 255."""
    if np.issubdtype(image.dtype, np.integer):
        return float(np.iinfo(image.dtype).max)
    return 1.0 if float(image.max(initial=0.0)) <= 1.0 else 255.0


def _skin_reference(image: np.ndarray, lesion: np.ndarray, image_max: float) -> np.ndarray | None:
    """Median linear RGB of the skin around a lesion (pixels farther from it than 2% of the image diagonal, on a grid
    of about 512 pixels a side), or None when less than 2% of the image is skin."""
    step = max(1, int(round(max(lesion.shape) / 512)))
    les = lesion[::step, ::step]
    margin = max(1, int(round(0.02 * math.hypot(*les.shape))))
    skin = ~ndimage.binary_dilation(les, iterations=margin)
    if skin.sum() < 0.02 * skin.size:
        return None
    rgb = np.clip(image[::step, ::step][skin].astype(np.float32) / np.float32(image_max), 0.0, 1.0)
    return np.median(_srgb_to_linear(rgb), axis=0)


def _normalised_lab(rgb: np.ndarray, skin: np.ndarray | None) -> np.ndarray:
    """CIELAB of an sRGB image in [0, 1] after von Kries scaling (per channel, in linear RGB) that turns the median
    skin ``skin`` (linear RGB) into the reference skin; unscaled when ``skin`` is None."""
    rgb = np.clip(rgb, 0.0, 1.0)
    if skin is not None:
        reference = _srgb_to_linear(lab2rgb(np.asarray(REFERENCE_SKIN_LAB, np.float64)[None, None])[0, 0])
        rgb = _linear_to_srgb(_srgb_to_linear(rgb) * (reference / np.maximum(skin, 1e-4)))
    return rgb2lab(rgb).astype(np.float32)


class _Lesion:
    """A lesion cut to its bounding box, at full resolution and at the working resolution."""

    def __init__(self, lesion: np.ndarray, working_size: int) -> None:
        sl = ndimage.find_objects(lesion.astype(np.uint8))[0]
        self.rows, self.cols = (sl[0].start, sl[0].stop), (sl[1].start, sl[1].stop)
        self.box = lesion[sl]
        self.scale = min(1.0, working_size / max(self.box.shape))
        self.shape_w = tuple(max(1, int(round(s * self.scale))) for s in self.box.shape)
        if self.scale < 1.0:
            box_w = _shrink(self.box, self.shape_w) > 0.5
            if not box_w.any():  # a thin lesion that averaging would erase
                box_w = resize(self.box, self.shape_w, order=0, anti_aliasing=False)
            self.box_w = box_w
        else:
            self.box_w = self.box

    def image_w(self, image: np.ndarray, image_max: float) -> np.ndarray:
        """The image on the lesion's box at the working resolution, RGB in [0, 1]."""
        crop = image[self.rows[0] : self.rows[1], self.cols[0] : self.cols[1]]
        crop = _shrink(crop, self.shape_w) if self.scale < 1.0 else crop.astype(np.float32)
        return crop / np.float32(image_max)


def _shrink(arr: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``arr`` (``(H, W)`` or ``(H, W, C)``) shrunk to ``shape`` as float32: averaged over the largest whole blocks
    that fit, then bilinear for the rest (anti-aliased without the full-size float copies a Gaussian filter needs)."""
    k = max(1, min(arr.shape[0] // shape[0], arr.shape[1] // shape[1]))
    if k > 1:
        h, w = (arr.shape[0] // k) * k, (arr.shape[1] // k) * k
        blocks = arr[:h, :w].reshape(h // k, k, w // k, k, *arr.shape[2:])
        arr = blocks.mean(axis=(1, 3), dtype=np.float32)
    if tuple(arr.shape[:2]) != tuple(shape):
        arr = resize(arr.astype(np.float32, copy=False), (*shape, *arr.shape[2:]), order=1, anti_aliasing=False)
    return arr.astype(np.float32, copy=False)


def lesion_lab(
    mask: np.ndarray, image: np.ndarray, working_size: int = 512, image_max: float | None = None
) -> np.ndarray:
    """The CIELAB colours, normalised to the reference skin, of the lesion's pixels at the working resolution: what
    the colour measurement classifies (:func:`colour_fractions`), e.g. to tune the colour model.

    Args:
        mask: ``(H, W)`` array, nonzero is lesion.
        image: ``(H, W, 3)`` RGB image.
        working_size: see :func:`measure_lesion`.
        image_max: the value of full intensity; None: from the image (see :func:`measure_lesion`).

    Returns:
        ``(N, 3)`` float32 CIELAB values (``N = 0`` for an empty mask).
    """
    lesion, n = lesion_region(mask)
    if n == 0:
        return np.zeros((0, 3), np.float32)
    top = _image_max(image) if image_max is None else float(image_max)
    les = _Lesion(lesion, working_size)
    return _normalised_lab(les.image_w(image, top), _skin_reference(image, lesion, top))[les.box_w]


def _greatest_diameter(lesion: np.ndarray, spacing: tuple[float, float]) -> tuple[float, np.ndarray]:
    """Greatest (Feret) diameter of a lesion as ``regionprops``' ``feret_diameter_max`` computes it (the farthest pair
    of points of the convex hull of its sub-pixel contour), in the units of ``spacing``, and its end points (pixels)."""
    contour = np.vstack(find_contours(np.pad(lesion, 1).astype(np.float32), 0.5, fully_connected="high")) - 1.0
    try:
        pts = contour[ConvexHull(contour).vertices]
    except QhullError:  # a straight line of pixels: its contour is all there is
        pts = contour
    dist = squareform(pdist(pts * np.asarray(spacing)))
    i, j = np.unravel_index(dist.argmax(), dist.shape)
    return float(dist[i, j]), pts[[i, j]]


def _sector_solidity(lesion: np.ndarray, convex: np.ndarray, centroid: np.ndarray, angle0: float) -> np.ndarray:
    """The fraction of its convex hull the lesion fills in each of 8 sectors of 45 degrees about the centroid,
    starting at angle ``angle0`` (radians, in (row, col) coordinates): an indented border leaves its sector's hull
    partly empty."""
    rows, cols = np.nonzero(convex)
    theta = np.arctan2(rows - centroid[0], cols - centroid[1]) - angle0
    sector = np.floor((theta % (2 * np.pi)) / (np.pi / 4)).astype(int).clip(0, 7)
    hull = np.bincount(sector, minlength=8).astype(np.float64)
    inside = np.bincount(sector, weights=lesion[rows, cols].astype(np.float64), minlength=8)
    return np.divide(inside, hull, out=np.ones(8), where=hull > 0)


def _inertia_ellipse(
    box: np.ndarray, spacing: tuple[float, float] = (1.0, 1.0)
) -> tuple[tuple[float, float], tuple[float, float], float]:
    """Centroid (pixels), major and minor axis lengths (units of ``spacing``) and orientation of the ellipse with a
    lesion's second moments, as ``regionprops`` defines them (``centroid``, ``axis_major_length``,
    ``axis_minor_length``, ``orientation``), from ``skimage.measure``'s moment functions: ``regionprops`` would list
    every pixel's coordinates, hundreds of MB for a lesion on a large photograph."""
    m = moments(box, order=1)
    centroid = (float(m[1, 0] / m[0, 0]), float(m[0, 1] / m[0, 0]))
    tensor = inertia_tensor(box, spacing=spacing)
    eigvals = inertia_tensor_eigvals(box, T=tensor, spacing=spacing)
    a, b, _, c = tensor.flat
    orientation = (-math.pi / 4 if b < 0 else math.pi / 4) if a - c == 0 else 0.5 * math.atan2(-2 * b, c - a)
    return centroid, (4 * math.sqrt(max(eigvals[0], 0.0)), 4 * math.sqrt(max(eigvals[-1], 0.0))), orientation


def _axes(orientation: float) -> tuple[np.ndarray, np.ndarray]:
    """Unit ``(row, col)`` vectors of the major and minor axes for ``regionprops``' orientation (the angle from the
    row axis to the major axis)."""
    return np.array([math.cos(orientation), math.sin(orientation)]), np.array([-math.sin(orientation), math.cos(orientation)])


def measure_lesion(
    mask: np.ndarray,
    image: np.ndarray | None = None,
    pixel_spacing_mm: Sequence[float] | float | None = None,
    working_size: int = 512,
    image_max: float | None = None,
) -> dict[str, float | int | str]:
    """The ABCD measurements of the lesion in ``mask``: one row of ``measurements.csv``.

    - **diameter and size**: area; perimeter (Crofton estimate, ``skimage.measure.perimeter_crofton``); equivalent
      diameter (of the disc of the same area); greatest diameter (Feret), with its end points; major and minor axis
      lengths of the ellipse of the same second moments, and the major axis' orientation (degrees counter-clockwise
      from the picture's horizontal, in (-90, 90]).
    - **border**: ``border_irregularity`` = perimeter^2 / (4 pi area) (1 for a disc, larger for an elongated or a
      ragged border); ``solidity`` = area / convex hull area; ``irregular_border_sectors`` (0 to 8, counted like the
      ABCD rule's border score): the 45-degree sectors about the centroid, from the major axis, where the lesion
      fills less than :data:`SECTOR_SOLIDITY_THRESHOLD` of its convex hull.
    - **asymmetry**, about each principal axis (through the centroid, along the major and the minor axis):
      ``shape_asymmetry_*_axis`` = area of (lesion XOR lesion folded over the axis) / area (0 to 2);
      ``colour_asymmetry_*_axis`` = mean CIE76 colour difference between a lesion pixel and its mirror pixel (both in
      the lesion, on the normalised image smoothed over 5% of the lesion's diameter); ``shape_asymmetry`` = the sum
      of the two shape mismatches; ``asymmetry_score`` = the sum over both axes of shape mismatch + colour difference
      / :data:`COLOUR_ASYMMETRY_SCALE`; ``asymmetric_axes`` = the axes whose term exceeds
      :data:`ASYMMETRY_AXIS_THRESHOLD` (0, 1 or 2, like the experts' asymmetry grade). Without an image the colour
      terms are left out.
    - **colours**: the image is normalised so that the skin around the lesion matches :data:`REFERENCE_SKIN_LAB`
      (von Kries scaling in linear RGB; not done when under 2% of the image is skin), converted to CIELAB, and each
      lesion pixel is given the nearest of :data:`COLOUR_PROTOTYPES_LAB`; ``fraction_<colour>`` is the share of the
      lesion's pixels given that colour, and the colour is present (``<colour>`` = 1) when its fraction reaches
      :data:`COLOUR_MIN_FRACTION`; ``colour_count`` counts them.
    - **flags**: ``touches_border`` (the lesion reaches the image's edge: its diameter, area and asymmetry are then
      those of the visible part only), ``fills_image`` (it reaches all four edges).

    Asymmetry, colours and solidity are computed on the lesion's bounding box resized so that its longer side is at
    most ``working_size`` pixels (they are ratios, fractions and means, so the scale barely matters; it bounds the
    cost on large photographs); the other measurements at full resolution.

    Args:
        mask: ``(H, W)`` array, nonzero is lesion.
        image: ``(H, W, 3)`` RGB image (any dtype, see ``image_max``); None to leave colours out.
        pixel_spacing_mm: ``(row, col)`` spacing, or one number for square pixels; None when unknown (no ``*_mm``).
        working_size: longest side of the lesion's box for asymmetry, colours and solidity.
        image_max: the value of full intensity (255 for 8-bit images); None: the image's integer type's maximum, or
            1.0 for a float image within [0, 1], else 255.

    Returns:
        A dict with the keys of :data:`MEASUREMENT_COLUMNS`, NaN where a value cannot be measured. ``status`` is
        ``"ok"``, or says what is missing (``"empty mask"``, ``"ok; no image: colours not measured"``, ...).

    Raises:
        ValueError: for a mask that is not 2D, an image of another size or not RGB, or a spacing that is not positive.

    Example::

        >>> from skimage.draw import disk
        >>> m = np.zeros((200, 200), bool); m[disk((100, 100), 50)] = True
        >>> round(measure_lesion(m, pixel_spacing_mm=0.1)["equivalent_diameter_mm"], 1)
        10.0
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"expected a 2D mask, got shape {mask.shape}")
    if image is not None:
        image = np.asarray(image)
        if image.shape != (*mask.shape, 3):
            raise ValueError(f"expected an RGB image of shape {(*mask.shape, 3)} (the mask's size), got {image.shape}")
    spacing = _spacing_pair(pixel_spacing_mm)
    row: dict[str, float | int | str] = {k: float("nan") for k in MEASUREMENT_COLUMNS}
    if spacing:
        row["pixel_spacing_row_mm"], row["pixel_spacing_col_mm"] = spacing
    lesion, n = lesion_region(mask)
    row["num_components"] = n
    if n == 0:
        row.update(status="empty mask", area_px=0, area_fraction=0.0, colour_count=0, touches_border=0, fills_image=0)
        return row
    notes = []
    les = _Lesion(lesion, working_size)
    (r0, r1), (c0, c1) = les.rows, les.cols
    area, perimeter = float(les.box.sum()), float(perimeter_crofton(les.box))
    centroid, (major, minor), orientation = _inertia_ellipse(les.box)
    feret, ends = _greatest_diameter(les.box, (1.0, 1.0))
    major_dir, _ = _axes(orientation)
    # the picture's angle: counter-clockwise from the horizontal, with rows running down
    angle = math.degrees(math.atan2(-major_dir[0], major_dir[1]))
    angle = angle - 180.0 if angle > 90.0 else (angle + 180.0 if angle <= -90.0 else angle)
    h, w = mask.shape
    edges = (r0 == 0, c0 == 0, r1 == h, c1 == w)
    row.update(
        area_px=area,
        area_fraction=area / mask.size,
        perimeter_px=perimeter,
        equivalent_diameter_px=math.sqrt(4 * area / math.pi),
        greatest_diameter_px=feret,
        major_axis_px=major,
        minor_axis_px=minor,
        orientation_deg=angle,
        centroid_row_px=centroid[0] + r0,
        centroid_col_px=centroid[1] + c0,
        greatest_diameter_row0_px=float(ends[0, 0] + r0),
        greatest_diameter_col0_px=float(ends[0, 1] + c0),
        greatest_diameter_row1_px=float(ends[1, 0] + r0),
        greatest_diameter_col1_px=float(ends[1, 1] + c0),
        border_irregularity=perimeter**2 / (4 * math.pi * area),
        touches_border=int(any(edges)),
        fills_image=int(all(edges)),
    )
    if spacing:
        sr, sc = spacing
        _, (major_mm, minor_mm), _ = _inertia_ellipse(les.box, spacing)
        row.update(
            area_mm2=area * sr * sc,
            equivalent_diameter_mm=math.sqrt(4 * area * sr * sc / math.pi),
            greatest_diameter_mm=_greatest_diameter(les.box, spacing)[0],
            major_axis_mm=major_mm,
            minor_axis_mm=minor_mm,
        )
        if math.isclose(sr, sc, rel_tol=1e-3):
            row["perimeter_mm"] = perimeter * sr
        else:
            notes.append("non-square pixels: perimeter_mm not measured")

    # at the working resolution
    props_w = regionprops(les.box_w.astype(np.uint8))[0]
    centroid_w = np.asarray(props_w.centroid)
    axes_w = _axes(float(props_w.orientation))
    sectors = _sector_solidity(les.box_w, props_w.image_convex, centroid_w, math.atan2(*axes_w[0]))
    shape_terms = [fold_mismatch(les.box_w, centroid_w, u) for u in axes_w]
    row.update(
        solidity=float(props_w.solidity),
        irregular_border_sectors=int((sectors < SECTOR_SOLIDITY_THRESHOLD).sum()),
        shape_asymmetry_major_axis=shape_terms[0],
        shape_asymmetry_minor_axis=shape_terms[1],
        shape_asymmetry=sum(shape_terms),
    )
    colour_terms = [0.0, 0.0]
    if image is None:
        notes.append("no image: colours not measured")
    else:
        top = _image_max(image) if image_max is None else float(image_max)
        skin = _skin_reference(image, lesion, top)
        if skin is None:
            notes.append("no skin around the lesion: colours not normalised")
        lab = _normalised_lab(les.image_w(image, top), skin)
        fractions = colour_fractions(lab[les.box_w])
        for c in DERMOSCOPIC_COLOURS:
            row[f"fraction_{c}"] = fractions[c]
            row[c] = int(fractions[c] >= COLOUR_MIN_FRACTION[c])
        row["colour_count"] = int(sum(row[c] for c in DERMOSCOPIC_COLOURS))
        # regional colour, not texture: smoothed over 5% of the lesion's diameter, on a grid of about sigma / 3
        sigma = max(1.0, 0.05 * float(props_w.equivalent_diameter_area))
        k = max(1, int(sigma // 3))
        mask_k = downscale_local_mean(les.box_w.astype(np.float32), (k, k)) > 0.5
        lab_k = downscale_local_mean(lab, (k, k, 1))
        smooth = np.stack([ndimage.gaussian_filter(lab_k[..., i], sigma / k) for i in range(3)], -1)
        centroid_k = (centroid_w + 0.5) / k - 0.5
        for name, u in zip(("major", "minor"), axes_w):
            row[f"colour_asymmetry_{name}_axis"] = _colour_fold_difference(mask_k, smooth, centroid_k, u)
        colour_terms = [
            0.0 if math.isnan(v) else v / COLOUR_ASYMMETRY_SCALE
            for v in (row["colour_asymmetry_major_axis"], row["colour_asymmetry_minor_axis"])
        ]
    terms = [s + c for s, c in zip(shape_terms, colour_terms)]
    row["asymmetry_score"] = sum(terms)
    row["asymmetric_axes"] = int(sum(t > ASYMMETRY_AXIS_THRESHOLD for t in terms))
    row["status"] = "; ".join(["ok", *notes])
    return row


def _spacing_pair(spacing: Sequence[float] | float | None) -> tuple[float, float] | None:
    if spacing is None:
        return None
    pair = (float(spacing),) * 2 if np.isscalar(spacing) else tuple(float(s) for s in spacing)  # type: ignore[arg-type]
    if len(pair) != 2 or not all(math.isfinite(s) and s > 0 for s in pair):
        raise ValueError(f"pixel_spacing_mm must be one positive number or a (row, col) pair, got {spacing!r}")
    return pair  # type: ignore[return-value]


# NIfTI xyzt_units spatial codes: 0 unknown (read as mm), 1 metre, 2 millimetre, 3 micrometre
_NIFTI_UNIT_TO_MM = {0: 1.0, 1: 1000.0, 2: 1.0, 3: 0.001}


def pixel_spacing_from_meta(meta: Mapping) -> tuple[float, float] | None:
    """The pixel spacing in millimetres of a MONAI-loaded 2D image's two spatial axes (in the array's order), when
    its file records one.

    NIfTI files (``NibabelReader``: ``pixdim`` with ``xyzt_units`` metres, millimetres or micrometres; no units is
    read as millimetres, the format's usual convention) and MetaImage, NRRD or DICOM files (``ITKReader``:
    ``spacing``, millimetres) record a spacing, taken from the image's affine. PNG, JPEG, BMP and TIFF files
    (``PILReader``) do not: a print resolution in dots per inch is not the size of the skin a pixel shows. A spacing
    of exactly 1 with no units is what a file written without a spacing holds, and counts as unknown.

    Args:
        meta: the image's metadata (``MetaTensor.meta``).

    Returns:
        ``(spacing along spatial axis 0, along axis 1)`` in mm, or None.

    Example::

        >>> pixel_spacing_from_meta(LoadImage(image_only=True)("lesion.nii.gz").meta)  # doctest: +SKIP
        (0.05, 0.05)
    """
    if "pixdim" not in meta and "spacing" not in meta:
        return None
    affine = meta.get("original_affine", meta.get("affine"))
    if affine is None:
        return None
    spacing = np.asarray(affine_to_spacing(torch.as_tensor(np.asarray(affine)), r=2), np.float64)[:2]
    units = int(np.asarray(meta.get("xyzt_units", 0)).item()) & 0x07 if "pixdim" in meta else 0
    if units == 0 and np.allclose(spacing, 1.0):
        return None
    spacing = spacing * _NIFTI_UNIT_TO_MM.get(units, 1.0)
    return float(spacing[0]), float(spacing[1])


class LesionMeasurementsd(MapTransform):
    """Adds the ABCD measurements (:func:`measure_lesion`) of each mask to the data, as ``<key>_measurements`` (a dict
    with the keys of :data:`MEASUREMENT_COLUMNS`).

    Takes MONAI's channel-first arrays: masks ``(1, *spatial)`` (values above 0.5 are lesion) and the RGB image
    ``(3, *spatial)`` at the masks' size. Give it the image as loaded, not the network's resized and rescaled input:
    colours are measured on its pixel values. The pixel spacing is ``pixel_spacing_mm`` when given, else read from the
    image's metadata (the mask's when there is no image; see :func:`pixel_spacing_from_meta`).

    Args:
        keys: keys of the binary masks to measure.
        image_key: key of the RGB image; None to measure shapes only.
        pixel_spacing_mm: spacing in mm, one number or ``(row, col)`` of the picture; overrides the metadata.
        spatial_order: ``"WH"`` for MONAI's PIL/ITK-read 2D arrays (transposed back to the picture's rows and
            columns), ``"HW"`` for arrays in (rows, columns) order.
        image_max: the value of full intensity; None: from the image (see :func:`measure_lesion`).
        working_size: see :func:`measure_lesion`.
        allow_missing_keys: do not raise for a missing key.

    Raises:
        ValueError: for a ``spatial_order`` other than "WH" or "HW"; when called, for a mask that is not one 2D
            channel, an image that is not RGB or not of the mask's size (the message names the file).

    Example::

        >>> from skimage.draw import disk
        >>> m = torch.zeros(1, 200, 200); m[0][disk((100, 100), 50)] = 1
        >>> out = LesionMeasurementsd("pred", image_key=None, pixel_spacing_mm=0.1)({"pred": m})
        >>> round(out["pred_measurements"]["greatest_diameter_mm"])
        10
    """

    def __init__(
        self,
        keys: KeysCollection,
        image_key: str | None = "image",
        pixel_spacing_mm: Sequence[float] | float | None = None,
        spatial_order: str = "WH",
        image_max: float | None = None,
        working_size: int = 512,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if spatial_order not in ("WH", "HW"):
            raise ValueError(f"spatial_order must be 'WH' or 'HW', got {spatial_order!r}")
        self.image_key = image_key
        self.pixel_spacing_mm = _spacing_pair(pixel_spacing_mm)
        self.spatial_order = spatial_order
        self.image_max = image_max
        self.working_size = working_size

    def _picture(self, arr: np.ndarray) -> np.ndarray:
        """A ``(*spatial, ...)`` array in the picture's (rows, columns) order."""
        return arr if self.spatial_order == "HW" else np.swapaxes(arr, 0, 1)

    def _picture_spacing(self, meta: Mapping) -> tuple[float, float] | None:
        spacing = pixel_spacing_from_meta(meta)
        return spacing if spacing is None or self.spatial_order == "HW" else (spacing[1], spacing[0])

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        image, spacing, source = None, self.pixel_spacing_mm, self.image_key
        if self.image_key is not None and self.image_key in d:
            img = d[self.image_key]
            meta = getattr(img, "meta", {})
            source = meta.get("filename_or_obj", self.image_key)
            arr = img.detach().cpu().numpy() if isinstance(img, torch.Tensor) else np.asarray(img)
            if arr.ndim != 3 or arr.shape[0] != 3:
                raise ValueError(f"{source}: expected a channel-first 2D RGB image (3, *spatial), got {list(arr.shape)}")
            image = self._picture(np.moveaxis(arr, 0, -1))
            if spacing is None:
                spacing = self._picture_spacing(meta)
        for key in self.key_iterator(d):
            m = d[key]
            arr = m.detach().cpu().numpy() if isinstance(m, torch.Tensor) else np.asarray(m)
            name = getattr(m, "meta", {}).get("filename_or_obj", source or key)
            if arr.ndim != 3 or arr.shape[0] != 1:
                raise ValueError(f"{name}: expected a single-channel 2D mask (1, *spatial), got {list(arr.shape)}")
            mask = self._picture(arr[0] > 0.5)
            if image is not None and image.shape[:2] != mask.shape:
                raise ValueError(
                    f"{source}: mask {key!r} has spatial shape {list(arr.shape[1:])}, the image "
                    f"{list(self._picture(image).shape[:2])}: measure masks at the image's size"
                )
            key_spacing = spacing
            if key_spacing is None and image is None and hasattr(m, "meta"):
                key_spacing = self._picture_spacing(m.meta)
            d[f"{key}_measurements"] = measure_lesion(mask, image, key_spacing, self.working_size, self.image_max)
        return d
