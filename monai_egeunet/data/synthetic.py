"""A small synthetic dermoscopy-like data set, so that the data, training and export code can run without PH2.

The images only imitate the look of dermoscopy photos (skin background with optical shading, hairs, one dark
irregular lesion); they carry no clinical meaning. They are laid out like the PH2 copy the project uses, flat::

    root/images/SYN_000.png          RGB, 8-bit
    root/masks/SYN_000_lesion.png    single channel, 8-bit, values 0 and 255
    root/synthetic.json              parameters and generator version, written last

Example:
    >>> import tempfile
    >>> from monai_egeunet.data.synthetic import make_synthetic_dataset
    >>> root = make_synthetic_dataset(tempfile.mkdtemp(), num_images=4, image_size=(64, 80))
    >>> sorted(p.name for p in (root / "images").iterdir())[:2]
    ['SYN_000.png', 'SYN_001.png']
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import re
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from monai_egeunet.utils import atomic_write

__all__ = ["SYNTHETIC_VERSION", "default_synthetic_dir", "make_synthetic_dataset"]

# Bump whenever the drawing code changes what it produces, so that caches made by an older version are
# regenerated instead of being silently reused under the same parameters.
SYNTHETIC_VERSION = 1

_MARKER = "synthetic.json"
_IMAGE_RE = re.compile(r"SYN_(\d+)\.png")
_MASK_RE = re.compile(r"SYN_(\d+)_lesion\.png")

# Skin tones (RGB) from fair/pinkish to tanned; each image interpolates between two neighbours and jitters.
_SKIN_TONES = np.array(
    [[242, 208, 198], [236, 196, 178], [224, 178, 156], [210, 160, 130], [196, 142, 112]], dtype=np.float32
)
# Lesion tones (RGB): light brown, brown, dark brown, near black, bluish grey. All are much darker than every
# skin tone, which is what keeps "lesion darker than its surroundings" true even under strong vignetting.
_LESION_TONES = np.array(
    [[150, 98, 68], [120, 74, 50], [86, 52, 36], [58, 38, 32], [104, 100, 116]], dtype=np.float32
)
_DOT_TONE = np.array([42, 28, 24], dtype=np.float32)
_VEIL_TONE = np.array([112, 116, 138], dtype=np.float32)


def default_synthetic_dir() -> pathlib.Path:
    """Returns where the synthetic data set lives by default.

    ``$MONAI_EGEUNET_DATA/synthetic_dermoscopy`` when the environment variable ``MONAI_EGEUNET_DATA`` is set
    (and not empty), else ``~/.cache/monai_egeunet/synthetic_dermoscopy``. Nothing is created.

    Returns:
        The folder path, with ``~`` expanded.

    Example:
        >>> default_synthetic_dir().name  # under $MONAI_EGEUNET_DATA or ~/.cache/monai_egeunet
        'synthetic_dermoscopy'
    """
    base = os.environ.get("MONAI_EGEUNET_DATA")
    if base:
        return pathlib.Path(base).expanduser() / "synthetic_dermoscopy"
    return pathlib.Path("~/.cache/monai_egeunet/synthetic_dermoscopy").expanduser()


def make_synthetic_dataset(
    root: str | os.PathLike,
    num_images: int = 48,
    image_size: tuple[int, int] = (256, 320),
    seed: int = 0,
) -> pathlib.Path:
    """Generates (or reuses) a deterministic synthetic dermoscopy-like segmentation data set under ``root``.

    Writes ``root/images/SYN_000.png`` ... (RGB, 8-bit) and ``root/masks/SYN_000_lesion.png`` ...
    (single channel, 8-bit, 0 = skin, 255 = lesion), then ``root/synthetic.json`` holding the parameters and
    :data:`SYNTHETIC_VERSION`. When that marker already matches and every file is present, it returns at once
    without touching anything; otherwise it (re)generates the whole set and removes ``SYN_*`` files left from
    a larger earlier set. Every file is written to a temporary file in the same folder and moved into place
    with :func:`os.replace`, so an interrupted run never leaves a half-written file, and the marker, removed
    first and written last, only ever describes a complete set. Other files in ``root`` are left alone.

    Image ``i`` depends only on ``seed``, ``i`` and ``image_size``, so a larger ``num_images`` extends a
    smaller set with the same first images.

    Args:
        root: folder to fill; created if missing.
        num_images: number of image/mask pairs, at least 2.
        image_size: ``(height, width)`` of every image and mask, each at least 32.
        seed: non-negative seed of the :class:`numpy.random.Generator` the images are drawn from.

    Returns:
        ``root`` as a :class:`pathlib.Path` (with ``~`` expanded).

    Raises:
        TypeError: if ``num_images``, ``seed`` or an ``image_size`` entry is not an integer.
        ValueError: if ``num_images < 2``, ``image_size`` is not two entries each ``>= 32``, or ``seed < 0``.

    Example:
        >>> import tempfile
        >>> root = make_synthetic_dataset(tempfile.mkdtemp(), num_images=6, image_size=(128, 160), seed=1)
        >>> len(list((root / "masks").glob("*_lesion.png")))
        6
    """
    num_images = _as_int(num_images, "num_images")
    seed = _as_int(seed, "seed")
    if num_images < 2:
        raise ValueError(f"num_images must be at least 2, got {num_images}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    size = tuple(image_size)
    if len(size) != 2:
        raise ValueError(f"image_size must be (height, width), got {image_size!r}")
    height, width = (_as_int(s, "image_size entry") for s in size)
    for name, value in (("height", height), ("width", width)):
        if value < 32:
            raise ValueError(f"image_size {name} must be at least 32, got {value} in image_size={image_size!r}")

    root = pathlib.Path(os.fspath(root)).expanduser()
    image_dir, mask_dir = root / "images", root / "masks"
    marker = root / _MARKER
    params = {"version": SYNTHETIC_VERSION, "num_images": num_images, "image_size": [height, width], "seed": seed}
    names = [f"SYN_{i:03d}" for i in range(num_images)]

    if _read_marker(marker) == params and all(
        (image_dir / f"{n}.png").is_file() and (mask_dir / f"{n}_lesion.png").is_file() for n in names
    ):
        return root

    # Without the marker a half-regenerated folder is never mistaken for a complete set of either parameters.
    marker.unlink(missing_ok=True)
    image_dir.mkdir(parents=True, exist_ok=True)
    mask_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale(image_dir, _IMAGE_RE, num_images)
    _remove_stale(mask_dir, _MASK_RE, num_images)

    # spawn() keys child i by its index only, which is what makes image i independent of num_images.
    for name, child in zip(names, np.random.SeedSequence(seed).spawn(num_images)):
        image, mask = _render_case(np.random.default_rng(child), height, width)
        _save_png(image_dir / f"{name}.png", image)
        _save_png(mask_dir / f"{name}_lesion.png", mask)

    text = json.dumps(params, indent=2, sort_keys=True) + "\n"
    with atomic_write(marker, "w") as fh:
        fh.write(text)
    return root


def _as_int(value: Any, name: str) -> int:
    # bool is an int subclass, but passing True as a count or a seed is certainly a mistake.
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    return int(value)


def _read_marker(marker: pathlib.Path) -> dict | None:
    try:
        return json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        # A missing or corrupt marker only means "regenerate".
        return None


def _remove_stale(folder: pathlib.Path, pattern: re.Pattern, num_images: int) -> None:
    for path in folder.iterdir():
        match = pattern.fullmatch(path.name)
        if match and int(match.group(1)) >= num_images and path.is_file():
            path.unlink(missing_ok=True)


def _save_png(path: pathlib.Path, array: np.ndarray) -> None:
    # Level 1 is about three times faster than the default on these noisy images, for files ~10 % larger.
    with atomic_write(path) as fh:
        Image.fromarray(array).save(fh, "PNG", compress_level=1)


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: float) -> np.ndarray:
    """Zero-mean, unit-std low-frequency noise: a coarse random grid upsampled bicubically."""
    gh = max(2, round(cells * height / max(height, width)) + 2)
    gw = max(2, round(cells * width / max(height, width)) + 2)
    grid = rng.standard_normal((gh, gw)).astype(np.float32)
    field = np.asarray(Image.fromarray(grid, "F").resize((width, height), Image.BICUBIC), dtype=np.float32)
    return (field - field.mean()) / (field.std() + 1e-6)


def _lesion_polygon(rng: np.random.Generator, height: int, width: int) -> list[tuple[float, float]]:
    """An irregular star-shaped outline: a rotated ellipse with a random Fourier-perturbed radius."""
    # Uniform in equivalent radius, so that both small and large lesions are common.
    frac = rng.uniform(math.sqrt(0.05), math.sqrt(0.6)) ** 2
    theta = np.linspace(0.0, 2.0 * math.pi, 160, endpoint=False)
    radius = np.ones_like(theta)
    irregularity = rng.uniform(0.04, 0.22)
    for k in range(2, 9):
        radius += irregularity * rng.uniform(0.2, 1.0) / k**0.7 * np.cos(k * theta + rng.uniform(0, 2 * math.pi))
    # A little high-frequency raggedness, as real borders are rarely smooth.
    for k in range(9, 17):
        radius += 0.012 * rng.standard_normal() * np.cos(k * theta + rng.uniform(0, 2 * math.pi))
    radius = np.clip(radius, 0.35, None)
    aspect = rng.uniform(0.65, 1.0)
    x, y = radius * np.cos(theta), aspect * radius * np.sin(theta)
    angle = rng.uniform(0, math.pi)
    x, y = x * math.cos(angle) - y * math.sin(angle), x * math.sin(angle) + y * math.cos(angle)
    area = 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))
    scale = math.sqrt(frac * height * width / area)
    x, y = x * scale, y * scale

    # Beta(2, 2) keeps lesions near the centre, as in dermoscopy, while still varying the position; where the
    # lesion is bigger than the image along an axis it is centred and the image border cuts it.
    centre = []
    for coords, extent in ((x, width), (y, height)):
        margin = 0.02 * extent
        low, high = margin - coords.min(), extent - margin - coords.max()
        centre.append(low + rng.beta(2.0, 2.0) * (high - low) if low < high else extent / 2)
    return list(zip((x + centre[0]).tolist(), (y + centre[1]).tolist()))


def _render_case(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Draws one image ``(H, W, 3)`` uint8 and its mask ``(H, W)`` uint8 in {0, 255}."""
    scale = min(height, width) / 256.0

    # Skin: a tone between two neighbouring references, mottled at low and medium frequency.
    t = rng.uniform(0, len(_SKIN_TONES) - 1)
    lo = int(t)
    skin_tone = _SKIN_TONES[lo] + (t - lo) * (_SKIN_TONES[min(lo + 1, len(_SKIN_TONES) - 1)] - _SKIN_TONES[lo])
    skin_tone = (skin_tone + rng.uniform(-6, 6, 3)).astype(np.float32)
    shade = 1.0 + 0.05 * _smooth_noise(rng, height, width, 3)
    redness = np.float32(rng.uniform(2, 8)) * _smooth_noise(rng, height, width, 6)
    mottle = np.float32(rng.uniform(2, 5)) * _smooth_noise(rng, height, width, max(8, min(height, width) / 10))
    img = skin_tone[None, None, :] * shade[..., None]
    img[..., 0] += redness
    img[..., 1:] -= 0.4 * redness[..., None]
    img += mottle[..., None]

    # Lesion: the binary polygon is the mask; the image gets a blurred copy so the border is soft but its
    # 50 % level stays on the mask outline.
    polygon = _lesion_polygon(rng, height, width)
    mask_im = Image.new("L", (width, height), 0)
    ImageDraw.Draw(mask_im).polygon(polygon, fill=255)
    mask = np.asarray(mask_im, dtype=np.uint8)
    area = max(int(np.count_nonzero(mask)), 1)
    eq_radius = math.sqrt(area / math.pi)
    alpha = np.asarray(mask_im.filter(ImageFilter.GaussianBlur(max(1.0, rng.uniform(0.03, 0.09) * eq_radius))))
    alpha = alpha.astype(np.float32) / 255.0
    # Depth in [0, 1] from the border to the core, so the centre and periphery can take different tones.
    depth = np.asarray(mask_im.filter(ImageFilter.GaussianBlur(0.35 * eq_radius)), dtype=np.float32) / 255.0
    depth = np.clip((depth - 0.5) * 2.0, 0.0, 1.0)

    idx = rng.choice(len(_LESION_TONES), size=2)
    rim, core = ((_LESION_TONES[i] + rng.uniform(-10, 10, 3)).astype(np.float32) for i in idx)
    if rng.random() < 0.7:
        # Most naevi are darker in the middle than at the rim.
        rim, core = (rim, core) if core.sum() <= rim.sum() else (core, rim)
    lesion = rim[None, None, :] + depth[..., None] * (core - rim)[None, None, :]
    blotch = _smooth_noise(rng, height, width, rng.uniform(6, 14))
    lesion *= 1.0 + np.float32(rng.uniform(0.08, 0.2)) * blotch[..., None]
    dark = np.clip((_smooth_noise(rng, height, width, rng.uniform(8, 16)) - rng.uniform(0.3, 1.2)) * 0.6, 0, 0.55)
    lesion += dark[..., None] * (_DOT_TONE - lesion)
    if rng.random() < 0.35:
        veil = np.clip(_smooth_noise(rng, height, width, 5) - rng.uniform(0.0, 0.8), 0, 0.6) * depth
        lesion += veil[..., None] * (_VEIL_TONE - lesion)

    # Dots and globules, placed on lesion pixels.
    dots_im = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(dots_im)
    inside = np.flatnonzero(mask)
    for pos in rng.choice(inside, size=min(len(inside), int(rng.integers(0, 60))), replace=False):
        cy, cx = divmod(int(pos), width)
        r = rng.uniform(0.8, 3.0) * scale
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=int(rng.integers(150, 256)))
    dots = np.asarray(dots_im.filter(ImageFilter.GaussianBlur(0.6 * scale)), dtype=np.float32) / 255.0
    lesion += dots[..., None] * (_DOT_TONE - lesion)

    opacity = np.float32(rng.uniform(0.85, 0.97))
    img += (opacity * alpha)[..., None] * (lesion - img)

    # Hairs: thin dark quadratic Bezier curves over everything, in some images only.
    if rng.random() < 0.4:
        hair_im = Image.new("L", (width, height), 0)
        draw = ImageDraw.Draw(hair_im)
        s = np.linspace(0.0, 1.0, 24)[:, None]
        for _ in range(int(rng.integers(1, 11))):
            start = rng.uniform((-0.1 * width, -0.1 * height), (1.1 * width, 1.1 * height))
            direction = rng.uniform(0, 2 * math.pi)
            length = rng.uniform(0.3, 1.0) * max(height, width)
            end = start + length * np.array([math.cos(direction), math.sin(direction)])
            bend = rng.normal(0, 0.15 * length) * np.array([-math.sin(direction), math.cos(direction)])
            control = (start + end) / 2 + bend
            points = (1 - s) ** 2 * start + 2 * s * (1 - s) * control + s**2 * end
            w = max(1, round(rng.uniform(0.8, 1.8) * scale))
            draw.line([tuple(p) for p in points.tolist()], fill=255, width=w, joint="curve")
        hair = np.asarray(hair_im.filter(ImageFilter.GaussianBlur(0.5)), dtype=np.float32) / 255.0
        hair_tone = rng.uniform((30, 22, 18), (75, 55, 45)).astype(np.float32)
        img += (np.float32(rng.uniform(0.7, 0.95)) * hair)[..., None] * (hair_tone - img)

    # Vignetting of the dermatoscope's round field of view, off-centre by a little.
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    cy, cx = height / 2 * (1 + rng.uniform(-0.1, 0.1)), width / 2 * (1 + rng.uniform(-0.1, 0.1))
    r = np.hypot(yy - np.float32(cy), xx - np.float32(cx)) / np.float32(0.5 * math.hypot(height, width))
    start_r, ramp = np.float32(rng.uniform(0.6, 0.9)), np.float32(rng.uniform(0.25, 0.5))
    falloff = np.clip((r - start_r) / ramp, 0.0, 1.0)
    img *= (1.0 - np.float32(rng.uniform(0.15, 0.75)) * falloff * falloff * (3 - 2 * falloff))[..., None]

    # Fine sensor-like noise last, so it also covers the lesion and hairs.
    img += np.float32(rng.uniform(1.5, 4.0)) * rng.standard_normal((height, width, 1), dtype=np.float32)
    # Per-channel chroma noise: uniform is several times cheaper to draw than normal and looks the same here.
    img += np.float32(3.4) * (rng.random((height, width, 3), dtype=np.float32) - np.float32(0.5))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), mask
