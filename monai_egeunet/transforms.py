"""Transforms the bundle needs that MONAI does not have: 3-channel images and binary masks from any file (with
:func:`convert_pil_mode` for ``PILReader``), 2D images from single-slice volumes, a low-memory min-max scaling (with
the extremes of the image before a resize, if recorded), an invertible resize of the shortest side, and
:func:`mark_no_channel` for MONAI's 2D writers."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import DtypeLike, KeysCollection
from monai.data import MetaTensor
from monai.data.meta_obj import get_track_meta
from monai.transforms import MapTransform, Resize, Resized, SqueezeDim
from monai.transforms.inverse import TraceableTransform
from monai.transforms.spatial.functional import resize
from monai.transforms.utils import scale_affine
from monai.utils import InterpolateMode, MetaKeys, TraceKeys, convert_to_dst_type, convert_to_tensor, get_equivalent_dtype
from PIL import Image

from monai_egeunet.measurements import LesionMeasurementsd

__all__ = [
    "convert_pil_mode",
    "mark_no_channel",
    "EnsureRGBd",
    "BinarizeMaskd",
    "EnsureSpatial2Dd",
    "RecordIntensityRanged",
    "MinMaxScaled",
    "ResizeShortestSide",
    "ResizeShortestSided",
    "LesionMeasurementsd",
]


#: PIL modes whose pixels are already grey or RGB(A) intensities (16-bit and float grey included)
_INTENSITY_MODES = {"L", "LA", "RGB", "RGBA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


def convert_pil_mode(image: Image.Image) -> Image.Image:
    """``PILReader``'s ``converter``: a PIL image whose pixels are not grey or RGB(A) intensities becomes RGB (grey for
    1-bit images), so that palette PNGs, CMYK or YCbCr JPEGs, LAB/HSV TIFFs... load as the photos they show.

    Grey, grey + alpha, RGB and RGBA images (8-bit, 16-bit or float grey) pass unchanged; :class:`EnsureRGBd` then
    makes every image 3-channel.

    Args:
        image: the opened image (not yet decoded).

    Returns:
        The image to read.

    Example::

        >>> convert_pil_mode(Image.new("P", (4, 4))).mode
        'RGB'
    """
    if image.mode in _INTENSITY_MODES:
        return image
    return image.convert("L" if image.mode == "1" else "RGB")


def mark_no_channel(img: torch.Tensor) -> torch.Tensor:
    """Marks a one-channel ``MetaTensor`` about to be written as a 2D file as having no channel dimension there.

    A workaround for MONAI 1.6.1's NIfTI and ITK writers: they squeeze the channel of a one-channel 2D image, then
    recount its spatial dimensions from the affine and the metadata's ``original_channel_dim``; for an image read from
    a PNG/JPEG (channel-last, ``original_channel_dim=-1``) they count one spatial dimension and fail
    (``'>=' not supported between instances of 'NoneType' and 'int'``). Masks of NIfTI inputs (no channel) are
    unaffected; the PNG writer ignores the key. Use it through ``Lambdad``.

    Args:
        img: the channel-first prediction (a plain tensor passes unchanged).

    Returns:
        ``img``, its metadata updated in place.
    """
    if isinstance(img, MetaTensor) and img.shape[0] == 1:
        img.meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = "no_channel"
    return img


class _ItemwiseMapTransform(MapTransform):
    """A dictionary transform that replaces each selected item by :meth:`convert` of it."""

    def convert(self, img: torch.Tensor, key: Hashable) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.convert(d[key], key)
        return d


def _plain(img: torch.Tensor) -> torch.Tensor:
    """The plain tensor of a ``MetaTensor`` (the same memory), or ``img``."""
    return img.as_tensor() if isinstance(img, MetaTensor) else img


def _extremes(img: torch.Tensor) -> tuple[float, float]:
    """The minimum and maximum of ``img`` (a plain or ``MetaTensor``)."""
    data = _plain(img)
    # a permuted view (a reader's (W, H, C) array made channel-first) is reduced in its memory order: the same
    # values, without PyTorch's strided path, which is an order of magnitude slower on an 8-bit photo
    order = sorted(range(data.ndim), key=lambda d: -data.stride(d))
    if data.permute(order).is_contiguous():
        data = data.permute(order)
    lo, hi = data.aminmax()
    return float(lo), float(hi)


def _source(img: torch.Tensor, key: Hashable) -> Hashable:
    """The file an image came from (its MONAI metadata), else its key: what an error message names."""
    return getattr(img, "meta", {}).get("filename_or_obj", key)


class EnsureRGBd(_ItemwiseMapTransform):
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

    def convert(self, img: torch.Tensor, key: Hashable) -> torch.Tensor:
        c = img.shape[0]
        if c in (1, 2):
            return img[:1].repeat(3, *([1] * (img.ndim - 1)))
        if c == 4:
            return img[:3]
        if c != 3:
            raise ValueError(f"{_source(img, key)}: expected a grey, grey+alpha, RGB or RGBA image, got {c} channels")
        return img


class BinarizeMaskd(_ItemwiseMapTransform):
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

    def convert(self, mask: torch.Tensor, key: Hashable) -> torch.Tensor:
        peak = mask.max()
        fg = mask.amax(dim=0, keepdim=True) > (peak / 2 if peak > 0 else 0)
        return convert_to_dst_type(fg, mask, dtype=torch.float32)[0]


class EnsureSpatial2Dd(_ItemwiseMapTransform):
    """Makes a channel-first image 2D by dropping trailing singleton spatial dimensions (from the data, the affine and
    the ``spatial_shape`` metadata).

    A single-slice NIfTI/MetaImage file loads as ``(C, X, Y, 1)``; the network and the 2D writers want ``(C, X, Y)``.
    2D images pass unchanged.

    Args:
        keys: keys of the images (channel-first, after ``EnsureChannelFirstd``).
        allow_missing_keys: do not raise for a missing key.

    Raises:
        ValueError: for an image with more than one slice (a volume); the message names the file.

    Example::

        >>> EnsureSpatial2Dd("image")({"image": torch.rand(1, 32, 48, 1)})["image"].shape
        torch.Size([1, 32, 48])
    """

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.squeeze = SqueezeDim(dim=-1, update_meta=True)

    def convert(self, img: torch.Tensor, key: Hashable) -> torch.Tensor:
        while img.ndim > 3 and img.shape[-1] == 1:
            img = self.squeeze(img)
            if isinstance(img, MetaTensor) and len(img.meta.get(MetaKeys.SPATIAL_SHAPE, ())) > 2:
                # writers compare it with the data's dimensions to find the channel (SaveImage remembers the
                # answer for the next images too)
                img.meta[MetaKeys.SPATIAL_SHAPE] = np.asarray(img.meta[MetaKeys.SPATIAL_SHAPE])[:-1]
        if img.ndim != 3:
            raise ValueError(
                f"{_source(img, key)}: expected a 2D image (or a single-slice volume), got spatial shape "
                f"{list(img.shape[1:])}"
            )
        return img


#: the metadata key of :class:`RecordIntensityRanged` and :class:`MinMaxScaled`
INTENSITY_RANGE_KEY = "intensity_range"


class RecordIntensityRanged(_ItemwiseMapTransform):
    """Records each image's minimum and maximum in its metadata (``meta[meta_key] = [min, max]``), for a
    :class:`MinMaxScaled` after a resize to scale with the extremes of the image as it was read.

    Min-max scaling and anti-aliased resizing commute (a resize is a weighted mean, its weights summing to one), so
    the photo can be shrunk first, in 8 bits, and the small result scaled: the same image as scaling first, within
    a grey level, without a full-size float copy. The extremes must be those of the photo, not of the shrunk image
    (shrinking averages isolated extreme pixels away, which would change the scaling).

    Args:
        keys: keys of the images (``MetaTensor``s, returned as they are with one more metadata key; plain tensors
            have no metadata and are left as they are).
        meta_key: the metadata key to record ``[min, max]`` under.
        allow_missing_keys: do not raise for a missing key.

    Example::

        >>> x = MetaTensor(torch.tensor([[[3, 64], [128, 200]]], dtype=torch.uint8))
        >>> RecordIntensityRanged("image")({"image": x})["image"].meta["intensity_range"]
        [3.0, 200.0]
    """

    def __init__(self, keys: KeysCollection, meta_key: str = INTENSITY_RANGE_KEY,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.meta_key = meta_key

    def convert(self, img: torch.Tensor, key: Hashable) -> torch.Tensor:
        if isinstance(img, MetaTensor):
            # an 8-bit photo's extremes are found several times faster than its float copy's
            img.meta[self.meta_key] = list(_extremes(img))
        return img


class MinMaxScaled(_ItemwiseMapTransform):
    """Per-image min-max scaling to ``[minv, maxv]``, as ``ScaleIntensityd(minv=minv, maxv=maxv)`` does, computed in
    place on a single float copy of the image.

    ``ScaleIntensityd``'s expression creates three or four full-size float temporaries: about 1 GB more for a
    24-megapixel RGB photo. A constant image becomes ``minv`` everywhere (``ScaleIntensityd`` makes it ``0``; they
    agree for ``minv=0``). With ``range_key``, the extremes are those :class:`RecordIntensityRanged` recorded in the
    image's metadata before a resize (the image's own when there is no record).

    Args:
        keys: keys of the images.
        minv: value of the image minimum after scaling.
        maxv: value of the image maximum after scaling.
        dtype: output floating-point type.
        range_key: the metadata key of recorded ``[min, max]`` extremes to scale with, or None for the image's own.
        allow_missing_keys: do not raise for a missing key.

    Example::

        >>> x = torch.tensor([[[0, 64], [128, 255]]], dtype=torch.uint8)
        >>> MinMaxScaled("image", maxv=255.0)({"image": x})["image"]
        tensor([[[  0.,  64.],
                 [128., 255.]]])
    """

    def __init__(
        self,
        keys: KeysCollection,
        minv: float = 0.0,
        maxv: float = 1.0,
        dtype: torch.dtype = torch.float32,
        range_key: str | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.minv = float(minv)
        self.maxv = float(maxv)
        self.dtype = dtype
        self.range_key = range_key

    def convert(self, img: torch.Tensor, key: Hashable) -> torch.Tensor:
        if not isinstance(img, torch.Tensor):
            img = torch.as_tensor(img)
        recorded = getattr(img, "meta", {}).get(self.range_key) if self.range_key is not None else None
        # the extremes of the image as stored (an 8-bit photo's are found several times faster than its float
        # copy's), then one new tensor, never the caller's (a cached dataset item must not change), in the input's
        # memory layout: a reader's (W, H, C) array made channel-first is a channels-last view, and converting it
        # in place of copying it to planes saves a pass that PyTorch's resizing does not need
        lo, hi = (float(v) for v in recorded) if recorded is not None else _extremes(img)
        if hi <= lo:
            return torch.full_like(img, self.minv, dtype=self.dtype)
        out = img.to(self.dtype, copy=True)
        # the arithmetic on the plain tensor sharing its memory: a MetaTensor would copy its metadata at every step
        data = _plain(out).sub_(lo).mul_((self.maxv - self.minv) / (hi - lo))
        if self.minv:  # adding 0.0 would change no value
            data.add_(self.minv)
        return out


class ResizeShortestSide(Resize):
    """Resizes an image so that its shortest spatial side is ``spatial_size``, keeping the aspect ratio.

    MONAI's :class:`~monai.transforms.Resize` scales the *longest* side (``size_mode="longest"``); a network trained
    on whole images resized to a square sees objects at the scale of the short side, so that is the side to match
    before sliding-window inference. Every other side is scaled by the same factor (rounded, and never below
    ``spatial_size``).

    Shrinking uses ``downsample_mode``: ``"antialias"`` is bilinear interpolation with PyTorch's anti-aliasing
    (``interpolate(..., antialias=True)``: each output pixel a triangle-weighted mean of the input pixels it
    covers, computed in two separable passes, as PIL resizes), on 8-bit images in 8 bits when ``dtype`` is None
    (rounded to whole levels, as PIL does; no full-size float copy); ``"area"`` is the plain mean of the pixels covered
    (adaptive average pooling, several times slower on a CPU for a non-integer factor); any other mode is MONAI's,
    optionally after its Gaussian ``anti_aliasing`` filter (which needs several full-size float copies of a
    24-megapixel photo). Enlarging uses ``mode``. Invertible like ``Resize`` (e.g. with ``Invertd``): the inverse
    resizes back to the original shape with ``mode`` (``"area"`` would enlarge a probability map into blocks), or
    with nearest-neighbour when ``Invertd(nearest_interp=True)`` asks for it.

    Args:
        spatial_size: the length of the shortest side after resizing.
        mode: interpolation when enlarging, and of the inverse (see :class:`~monai.transforms.Resize`).
        downsample_mode: interpolation when shrinking: ``"antialias"``, ``"area"``, a MONAI mode, or None to use
            ``mode``.
        align_corners: see :class:`~monai.transforms.Resize`.
        anti_aliasing: Gaussian smoothing before shrinking with a MONAI mode other than ``"area"``.
        anti_aliasing_sigma: see :class:`~monai.transforms.Resize`.
        dtype: data type of the computation and of the result (float32 by default). None keeps the input's where
            the computation has it: floating types, and 8-bit images shrunk with ``"antialias"``; other types are
            computed in float32. The inverse (e.g. of a probability map) is computed in float32 after an 8-bit shrink.
        lazy: lazy execution, see MONAI's lazy resampling.

    Raises:
        ValueError: when ``spatial_size`` is not a positive integer.

    Example::

        >>> ResizeShortestSide(256)(torch.rand(3, 768, 576)).shape
        torch.Size([3, 341, 256])
    """

    def __init__(
        self,
        spatial_size: int,
        mode: str = InterpolateMode.BILINEAR,
        downsample_mode: str | None = InterpolateMode.AREA,
        align_corners: bool | None = None,
        anti_aliasing: bool = False,
        anti_aliasing_sigma: Sequence[float] | float | None = None,
        dtype: DtypeLike | torch.dtype = torch.float32,
        lazy: bool = False,
    ) -> None:
        if isinstance(spatial_size, bool) or int(spatial_size) != spatial_size or int(spatial_size) < 1:
            raise ValueError(f"spatial_size must be a positive integer, got {spatial_size!r}")
        super().__init__(
            spatial_size=int(spatial_size),
            mode=mode,
            align_corners=align_corners,
            anti_aliasing=anti_aliasing,
            anti_aliasing_sigma=anti_aliasing_sigma,
            dtype=dtype,
            lazy=lazy,
        )
        self.downsample_mode = downsample_mode

    def output_shape(self, spatial_shape: Sequence[int]) -> tuple[int, ...]:
        """The spatial shape an image of ``spatial_shape`` is resized to."""
        target = int(self.spatial_size)  # type: ignore[arg-type]
        scale = target / min(int(s) for s in spatial_shape)
        return tuple(max(target, int(round(int(s) * scale))) for s in spatial_shape)

    def __call__(
        self,
        img: torch.Tensor,
        mode: str | None = None,
        align_corners: bool | None = None,
        anti_aliasing: bool | None = None,
        anti_aliasing_sigma: Sequence[float] | float | None = None,
        dtype: DtypeLike | torch.dtype = None,
        lazy: bool | None = None,
    ) -> torch.Tensor:
        """
        Args:
            img: channel-first image ``(C, *spatial)``.
            mode: overrides ``mode`` (enlarging and inverse) for this call.
            align_corners, anti_aliasing, anti_aliasing_sigma, dtype, lazy: override the constructor's.

        Returns:
            The resized image (a ``MetaTensor`` recording the operation when tracking is on).
        """
        spatial_shape = [int(s) for s in (img.peek_pending_shape() if isinstance(img, MetaTensor) else img.shape[1:])]
        size = self.output_shape(spatial_shape)
        inverse_mode = self.mode if mode is None else mode
        shrinking = min(spatial_shape) > int(self.spatial_size)  # type: ignore[arg-type]
        mode_ = self.downsample_mode if shrinking and self.downsample_mode is not None else inverse_mode
        lazy_ = self.lazy if lazy is None else lazy
        align_corners_ = self.align_corners if align_corners is None else align_corners
        dtype_ = get_equivalent_dtype(dtype or self.dtype or img.dtype, torch.Tensor)
        # PyTorch's anti-aliased kernel takes 8-bit images; everything else is resized in a floating type
        if not dtype_.is_floating_point and not (mode_ == "antialias" and not lazy_ and dtype_ == torch.uint8):
            dtype_ = torch.float32
        if mode_ == "antialias":
            if not lazy_:
                return self._shrink_antialiased(img, size, inverse_mode, align_corners_, dtype_)
            mode_ = InterpolateMode.BILINEAR  # lazy resampling has no anti-aliasing
        # Resize.__call__'s call with the computed size: the recorded operation is then inverted by Resize.inverse
        # (through this object, whose id the record carries)
        out = resize(
            img,
            size,
            mode_,
            align_corners_,
            dtype_,
            len(spatial_shape),
            self.anti_aliasing if anti_aliasing is None else anti_aliasing,
            self.anti_aliasing_sigma if anti_aliasing_sigma is None else anti_aliasing_sigma,
            lazy_,
            self.get_transform_info(),
        )
        if isinstance(out, MetaTensor) and mode_ != inverse_mode:
            records = out.pending_operations if lazy_ else out.applied_operations
            if records and records[-1].get(TraceKeys.ID) == id(self):
                records[-1][TraceKeys.EXTRA_INFO]["inverse_mode"] = inverse_mode
        return out  # type: ignore[no-any-return]

    def _shrink_antialiased(
        self, img: torch.Tensor, size: tuple[int, ...], inverse_mode: str, align_corners: bool | None, dtype: torch.dtype
    ) -> torch.Tensor:
        # MONAI's eager resize (monai.transforms.spatial.functional.resize), with PyTorch's anti-aliased bilinear
        # interpolation computing the data: the record is the one Resize.inverse reads, its mode the inverse's
        # a tensor of the kind wanted stays as it is laid out: convert_to_tensor would copy a channels-last image to
        # planes, which the interpolation does not need
        track_meta = get_track_meta()
        if not isinstance(img, torch.Tensor) or isinstance(img, MetaTensor) != track_meta:
            img = convert_to_tensor(img, track_meta=track_meta)
        orig_size = img.shape[1:]
        meta_info = TraceableTransform.track_transform_meta(
            img,
            sp_size=size,
            affine=scale_affine(orig_size, size, align_corners=bool(align_corners)),
            # the inverse resizes what the network made of the image (probabilities): in float, whatever the shrink's
            extra_info={"mode": inverse_mode, "align_corners": TraceKeys.NONE if align_corners is None else align_corners,
                        "dtype": str(dtype if dtype.is_floating_point else torch.float32)[6:], "new_dim": 0},
            orig_size=orig_size,
            transform_info=self.get_transform_info(),
            lazy=False,
        )
        data = _plain(img).to(dtype)
        resized = torch.nn.functional.interpolate(data[None], size=size, mode="bilinear", align_corners=align_corners,
                                                  antialias=True)[0]
        out = convert_to_dst_type(resized, img, dtype=dtype)[0]
        return out.copy_meta_from(meta_info) if isinstance(out, MetaTensor) else out  # type: ignore[no-any-return]

    def inverse_transform(self, data: torch.Tensor, transform: Mapping) -> torch.Tensor:
        extra = dict(transform[TraceKeys.EXTRA_INFO])
        # an "area" record left unchanged by Invertd(nearest_interp=True) is inverted with the enlarging mode
        if extra["mode"] == InterpolateMode.AREA and "inverse_mode" in extra:
            extra["mode"] = extra["inverse_mode"]
        return super().inverse_transform(data, {**transform, TraceKeys.EXTRA_INFO: extra})


class ResizeShortestSided(Resized):
    """Dictionary version of :class:`ResizeShortestSide`; invertible with ``Invertd`` like ``Resized``.

    Args:
        keys: keys of the images.
        spatial_size: the length of the shortest side after resizing.
        mode: interpolation when enlarging and of the inverse, one per key or one for all.
        downsample_mode: interpolation when shrinking (all keys); None to use ``mode``.
        align_corners: one per key or one for all.
        anti_aliasing: one per key or one for all.
        anti_aliasing_sigma: one per key or one for all.
        dtype: one per key or one for all; None keeps an 8-bit photo in 8 bits for the anti-aliased shrink (see
            :class:`ResizeShortestSide`).
        allow_missing_keys: do not raise for a missing key.
        lazy: lazy execution, see MONAI's lazy resampling.

    Example::

        >>> ResizeShortestSided("image", 256)({"image": torch.rand(3, 576, 768)})["image"].shape
        torch.Size([3, 256, 341])
    """

    def __init__(
        self,
        keys: KeysCollection,
        spatial_size: int,
        mode: Sequence[str] | str = InterpolateMode.BILINEAR,
        downsample_mode: str | None = InterpolateMode.AREA,
        align_corners: Sequence[bool | None] | bool | None = None,
        anti_aliasing: Sequence[bool] | bool = False,
        anti_aliasing_sigma: Sequence[Sequence[float] | float | None] | Sequence[float] | float | None = None,
        dtype: Sequence[DtypeLike | torch.dtype] | DtypeLike | torch.dtype = torch.float32,
        allow_missing_keys: bool = False,
        lazy: bool = False,
    ) -> None:
        super().__init__(
            keys,
            spatial_size=spatial_size,
            mode=mode,
            align_corners=align_corners,
            anti_aliasing=anti_aliasing,
            anti_aliasing_sigma=anti_aliasing_sigma,
            dtype=dtype,
            allow_missing_keys=allow_missing_keys,
            lazy=lazy,
        )
        # Resized's __call__ and inverse go through self.resizer
        # (its own dtype None: each call passes the key's, and None there keeps the input's)
        self.resizer = ResizeShortestSide(spatial_size, downsample_mode=downsample_mode, dtype=None, lazy=lazy)
