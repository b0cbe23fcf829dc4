"""What the bundle's inference workflow (``configs/inference.json``) needs besides MONAI: finding and checking the
input images, the default checkpoint, an ONNX Runtime network, and a report of what was written and what failed.

MONAI's ``DataLoader`` stops the whole run at the first file it cannot read, so every input is checked (decoded)
before inference starts; files that fail are named and skipped, the others are segmented, and
:class:`InferenceReport` says at the end what was written where and which inputs failed.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.data import FolderLayout, MetaTensor
from monai.transforms import LoadImage
from monai.utils import MetaKeys, convert_to_dst_type, optional_import
from PIL import Image, UnidentifiedImageError
from torch import nn

__all__ = [
    "IMAGE_EXTENSIONS",
    "PIL_EXTENSIONS",
    "InferenceReport",
    "OnnxRuntimeNetwork",
    "check_image",
    "first_existing",
    "list_images",
    "mark_no_channel",
]

logger = logging.getLogger(__name__)

#: read by MONAI's ``PILReader`` (its suffixes), so a file that PIL decodes also loads in the workflow
PIL_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
#: every extension the inference workflow takes: PIL formats, TIFF (ITK), NIfTI (nibabel), other ITK formats
IMAGE_EXTENSIONS = PIL_EXTENSIONS + (".tif", ".tiff", ".nii", ".nii.gz", ".mha", ".mhd", ".nrrd", ".nhdr", ".dcm")
#: PIL modes whose array is not grey/RGB(A) intensities (palette indices, other colour spaces)
_UNSUPPORTED_MODES = {"P", "PA", "CMYK", "YCbCr", "LAB", "HSV"}


def first_existing(paths: Sequence[str | os.PathLike]) -> str:
    """The first of ``paths`` that is a file, else the first one (so that the error names the preferred path).

    The bundle's default checkpoint is ``models/model.pt`` (written by training) and, in a fresh clone of the
    repository, the shipped weights at ``bundle/models/model.pt``.

    Args:
        paths: candidate paths, most preferred first.

    Returns:
        The chosen path as a string.
    """
    if not paths:
        raise ValueError("first_existing needs at least one path")
    return str(next((p for p in paths if Path(p).is_file()), paths[0]))


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def list_images(folder: str | os.PathLike, extensions: Iterable[str] = IMAGE_EXTENSIONS) -> list[Path]:
    """The image files directly in ``folder`` (not in subfolders), sorted by name; hidden files are ignored.

    Args:
        folder: the input folder.
        extensions: accepted extensions, lower case with the dot (``.nii.gz`` counts as one).

    Returns:
        The image paths.

    Raises:
        FileNotFoundError: when ``folder`` is not a folder.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"input folder {folder} does not exist or is not a folder")
    accepted = {e.lower() for e in extensions}
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    images = [p for p in files if _suffix(p) in accepted]
    ignored = [p.name for p in files if _suffix(p) not in accepted]
    if ignored:
        logger.info(f"{len(ignored)} file(s) in {folder} are not images and are ignored: {', '.join(ignored[:5])}"
                    f"{', ...' if len(ignored) > 5 else ''}")
    return images


def _check_pil(path: Path) -> str | None:
    try:
        with Image.open(path) as im:
            if im.mode in _UNSUPPORTED_MODES:
                return f"{im.format} image in {im.mode} mode: convert it to RGB or greyscale first"
            if im.width == 0 or im.height == 0:
                return f"empty image ({im.width}x{im.height})"
            if im.format == "JPEG":
                # DCT-domain downscaling still reads the whole entropy-coded stream (so truncation and corrupt data
                # show), for a fraction of the cost of a full decode
                im.draft(im.mode, (max(1, im.width // 8), max(1, im.height // 8)))
            im.load()
    except UnidentifiedImageError:
        return "not an image file that PIL can identify (wrong format or corrupt header)"
    except Image.DecompressionBombError as e:
        return f"too large to decode safely: {e}"
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        return f"cannot be decoded: {e}"
    return None


def _check_monai(path: Path) -> str | None:
    # formats other readers handle (ITK, nibabel): load it as the workflow will
    try:
        img = LoadImage(image_only=True, dtype=None, ensure_channel_first=True)(str(path))
    except Exception as e:  # readers raise anything from RuntimeError to struct.error
        return f"cannot be read: {type(e).__name__}: {e}"
    shape = [int(s) for s in img.shape[1:]]
    while len(shape) > 2 and shape[-1] == 1:
        shape.pop()
    if len(shape) != 2:
        return f"not a 2D image: spatial shape {shape} (only single-slice images can be segmented)"
    if 0 in shape:
        return f"empty image (spatial shape {shape})"
    if img.shape[0] > 4:
        return f"{img.shape[0]} channels: expected grey, grey+alpha, RGB or RGBA"
    return None


def check_image(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be segmented, or None when it can.

    PNG/JPEG/BMP files are decoded with PIL (what MONAI's ``PILReader`` uses; JPEGs at 1/8 scale, which still reads
    all their data); other formats are loaded with MONAI's ``LoadImage`` as the workflow does. Empty files, files
    that are not images whatever their name, truncated or corrupt files, palette/CMYK images, volumes with several
    slices and images with more than 4 channels are refused.

    Args:
        path: the image file.

    Returns:
        A short reason, or None.

    Example::

        >>> check_image("notes_renamed.png")  # doctest: +SKIP
        'not an image file that PIL can identify (wrong format or corrupt header)'
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        return f"cannot be accessed: {e}"
    if size == 0:
        return "empty file (0 bytes)"
    return _check_pil(path) if _suffix(path) in PIL_EXTENSIONS else _check_monai(path)


def mark_no_channel(img: torch.Tensor) -> torch.Tensor:
    """Marks a one-channel ``MetaTensor`` about to be written as a 2D file as having no channel dimension there.

    A workaround for MONAI 1.6.1's NIfTI and ITK writers: they squeeze the channel of a one-channel 2D image, then
    recount its spatial dimensions from the affine and the metadata's ``original_channel_dim``; for an image read from
    a PNG/JPEG (channel-last, ``original_channel_dim=-1``) they count one spatial dimension and fail
    (``'>=' not supported between instances of 'NoneType' and 'int'``). Masks of NIfTI inputs (no channel) are
    unaffected; the PNG writer ignores the key.

    Args:
        img: the channel-first prediction (a plain tensor passes unchanged).

    Returns:
        ``img``, its metadata updated in place.
    """
    if isinstance(img, MetaTensor) and img.shape[0] == 1:
        img.meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = "no_channel"
    return img


class InferenceReport:
    """Finds and checks the inputs of an inference run, then reports what was written and what failed.

    :attr:`datalist` lists the images of ``dataset_dir`` that pass :func:`check_image`, as ``{"image": path}``
    items for a MONAI ``Dataset``; the others are logged with the reason as they are found. Attached to the
    evaluator (put it in its handlers), it logs at the end how many masks were written to which folder and which
    inputs failed, and writes the same as JSON to ``report_file``. :meth:`finish` (the last step of the bundle's
    ``run``) ends the process with a non-zero status when any input failed, after all the others were written.

    Args:
        dataset_dir: the input folder (not searched recursively).
        output_dir: where the masks are written.
        output_postfix: the postfix the mask writer (``SaveImaged``) adds to each input's name.
        output_ext: the mask file extension.
        fail_on_error: make :meth:`finish` exit with status 1 when an input failed.
        report_file: JSON summary path; None to write none.
        extensions: the accepted input extensions.

    Example::

        >>> report = InferenceReport("images", "masks")  # doctest: +SKIP
        >>> report.datalist[0]
        {'image': 'images/IMD002.jpg'}
    """

    def __init__(
        self,
        dataset_dir: str | os.PathLike | None,
        output_dir: str | os.PathLike,
        output_postfix: str = "seg",
        output_ext: str = ".png",
        fail_on_error: bool = True,
        report_file: str | os.PathLike | None = None,
        extensions: Iterable[str] = IMAGE_EXTENSIONS,
    ) -> None:
        self.dataset_dir = dataset_dir
        self.output_dir = Path(output_dir)
        self.layout = FolderLayout(output_dir=str(output_dir), postfix=output_postfix, extension=output_ext,
                                   parent=False, makedirs=False)
        self.fail_on_error = fail_on_error
        self.report_file = None if report_file is None else Path(report_file)
        self.extensions = tuple(extensions)
        self.failed: dict[str, str] = {}
        self.written: list[str] = []
        self._datalist: list[dict[str, str]] | None = None
        self._expected: dict[str, str] = {}
        self._summarized = False

    def output_path(self, image: str | os.PathLike) -> Path:
        """Where the mask of ``image`` is written (the name ``SaveImaged`` gives it)."""
        return Path(self.layout.filename(subject=str(image)))

    @property
    def datalist(self) -> list[dict[str, str]]:
        """The inputs that can be segmented, ``[{"image": path}, ...]``; the folder is scanned on first access.

        Raises:
            ValueError: when ``dataset_dir`` is not set.
            FileNotFoundError: when it is not a folder or holds no image.
        """
        if self._datalist is None:
            self._datalist = self._scan()
        return self._datalist

    def _scan(self) -> list[dict[str, str]]:
        if self.dataset_dir is None or str(self.dataset_dir) == "":
            raise ValueError("no input folder: run with --dataset_dir FOLDER (the images to segment)")
        images = list_images(self.dataset_dir, self.extensions)
        if not images:
            raise FileNotFoundError(
                f"no images in {self.dataset_dir} (looked for {', '.join(self.extensions)}; subfolders are not "
                f"searched)"
            )
        items, owners = [], {}
        for path in images:
            reason = check_image(path)
            target = self.output_path(path)
            if reason is None and target in owners:
                # a.png and a.jpg would both write a_seg.png
                reason = f"its mask {target.name} would overwrite the one of {owners[target]}: rename one of them"
            if reason is not None:
                self.failed[path.name] = reason
                logger.warning(f"skipping {path}: {reason}")
                continue
            owners[target] = path.name
            self._expected[str(path)] = str(target)
            items.append({"image": str(path)})
        logger.info(f"{len(items)} of {len(images)} image(s) in {self.dataset_dir} to segment")
        return items

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.record)
        engine.add_event_handler(Events.COMPLETED, self.summarize)

    def record(self, engine: Engine) -> None:
        """Notes which masks of the current batch are on disk (runs after the postprocessing that writes them)."""
        batch = engine.state.batch
        for item in batch if isinstance(batch, list) else []:
            image = item.get("image") if isinstance(item, dict) else None
            name = getattr(image, "meta", {}).get("filename_or_obj")
            if name is not None and self.output_path(name).is_file():
                self.written.append(str(name))

    def summary(self) -> dict[str, Any]:
        """What was written and what failed, as the JSON report holds it."""
        done = set(self.written)
        failed = dict(self.failed)
        for image in self._expected:
            if image not in done:
                failed[Path(image).name] = "no mask was written (see the log above)"
        return {
            "dataset_dir": str(self.dataset_dir),
            "output_dir": str(self.output_dir),
            "written": [self._expected.get(i, str(self.output_path(i))) for i in self.written],
            "failed": failed,
        }

    def summarize(self, engine: Engine | None = None) -> dict[str, Any]:
        """Logs (once) and saves the summary; returns it."""
        summary = self.summary()
        if not self._summarized:
            self._summarized = True
            n, failed = len(summary["written"]), summary["failed"]
            pattern = Path(self.layout.filename(subject="*")).name
            logger.info(f"wrote {n} mask(s) ({pattern}) to {self.output_dir}")
            if failed:
                details = "; ".join(f"{name}: {why}" for name, why in failed.items())
                logger.warning(f"{len(failed)} input(s) failed and have no mask: {details}")
            if self.report_file is not None:
                self.report_file.parent.mkdir(parents=True, exist_ok=True)
                self.report_file.write_text(json.dumps(summary, indent=1))
        return summary

    def finish(self) -> None:
        """Logs the summary if the evaluator did not (nothing to segment), then exits with status 1 when an input
        failed and ``fail_on_error`` is set.

        Raises:
            SystemExit: naming the failed inputs.
        """
        if self._datalist is None:
            self.datalist  # noqa: B018  (scan, so that failures are known even when nothing ran)
        summary = self.summarize()
        if summary["failed"] and self.fail_on_error:
            raise SystemExit(
                f"inference: {len(summary['failed'])} input(s) failed: {', '.join(summary['failed'])} "
                f"({len(summary['written'])} mask(s) written to {self.output_dir})"
            )


class OnnxRuntimeNetwork(nn.Module):
    """An exported ONNX model run by ONNX Runtime, usable wherever the workflow takes the PyTorch network.

    Takes and returns ``torch.Tensor`` (on the input's device), so MONAI's inferers and evaluators run it as they
    run the network. A model exported with a fixed batch size (``onnx_export``'s default) is fed in chunks of that
    size, so sliding-window batches of any size work.

    Args:
        model_path: the ``.onnx`` file.
        device: where the workflow runs; CUDA uses ONNX Runtime's CUDA provider when it is installed.
        providers: ONNX Runtime execution providers; default from ``device``.
        intra_op_num_threads: ONNX Runtime's thread count; default ``torch.get_num_threads()``, so that both
            runtimes obey the same ``OMP_NUM_THREADS``/``torch.set_num_threads`` setting.

    Raises:
        FileNotFoundError: when ``model_path`` does not exist (the message says how to export one).

    Example::

        >>> net = OnnxRuntimeNetwork("models/model.onnx")  # doctest: +SKIP
        >>> net(torch.rand(2, 3, 256, 256)).shape
        torch.Size([2, 1, 256, 256])
    """

    def __init__(
        self,
        model_path: str | os.PathLike,
        device: str | torch.device | None = None,
        providers: Sequence[str] | None = None,
        intra_op_num_threads: int | None = None,
    ) -> None:
        super().__init__()
        ort, has_ort = optional_import("onnxruntime")
        if not has_ort:
            raise ImportError("use_onnx needs onnxruntime: pip install 'monai-egeunet[export]'")
        path = Path(model_path)
        if not path.is_file():
            raise FileNotFoundError(
                f"no ONNX model at {path}: export one with `python -m monai.bundle onnx_export network_def "
                f"--filepath {path} --ckpt_file models/model.pt --meta_file configs/metadata.json "
                f"--config_file configs/inference.json`, or name it with --onnx_path"
            )
        if providers is None:
            on_cuda = device is not None and torch.device(device).type == "cuda"
            available = ort.get_available_providers()
            providers = ["CUDAExecutionProvider"] if on_cuda and "CUDAExecutionProvider" in available else []
            providers = [*providers, "CPUExecutionProvider"]
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(intra_op_num_threads or torch.get_num_threads())
        self.model_path = path
        self.session = ort.InferenceSession(str(path), sess_options=options, providers=list(providers))
        model_input = self.session.get_inputs()[0]
        self.input_name = model_input.name
        batch = model_input.shape[0]
        self.fixed_batch = batch if isinstance(batch, int) and batch > 0 else None

    def _run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: ``(B, C, H, W)`` input.

        Returns:
            The model's first output, float32, of ``x``'s type (``MetaTensor`` or ``Tensor``) and device.
        """
        arr = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        n = self.fixed_batch
        if n is None or arr.shape[0] == n:
            out = self._run(arr)
        else:
            chunks = []
            for i in range(0, arr.shape[0], n):
                chunk = arr[i : i + n]
                short = n - chunk.shape[0]
                if short:  # pad the last chunk to the model's batch size, then drop the padding
                    chunk = np.concatenate([chunk, np.repeat(chunk[-1:], short, axis=0)])
                chunks.append(self._run(chunk)[: n - short])
            out = np.concatenate(chunks)
        # a MetaTensor in gives a MetaTensor out, as from the PyTorch network: Invertd needs it
        return convert_to_dst_type(torch.from_numpy(out), dst=x, dtype=torch.float32)[0]

    def extra_repr(self) -> str:
        return f"model_path={str(self.model_path)!r}, providers={self.session.get_providers()}"
