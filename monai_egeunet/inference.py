"""The inputs of the bundle's inference workflow (``configs/inference.json``): the images of a folder, the names of
their masks, and a dataset that turns an input that cannot be read into a named failure instead of stopping the run.

Every input is read once, by the workflow's own loader. MONAI's ``DataLoader`` would stop the whole run at the
first file it cannot decode; :class:`SkipFailuresDataset` returns such an input as a failure item instead, and
:func:`skip_failed_inputs` (the evaluator's ``iteration_update``) passes it over, so that all the other images are
segmented and :class:`monai_egeunet.handlers.InferenceReport` names the failed ones at the end.

Masks are named after their input without its extension (``IMD002.jpg`` -> ``IMD002_seg.png``). Inputs that would
get the same name (``a.jpg`` and ``a.png``) are all named with their extension too (``a_jpg_seg.png``,
``a_png_seg.png``), so that every input gets its own mask.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from monai.data import Dataset, FolderLayout
from monai.utils import ImageMetaKey

__all__ = [
    "FAILED_KEY",
    "IMAGE_EXTENSIONS",
    "InferenceInputs",
    "SkipFailuresDataset",
    "failure_reason",
    "first_existing",
    "list_images",
    "skip_failed_inputs",
]

logger = logging.getLogger(__name__)

#: every extension the inference workflow takes: PIL formats, TIFF (ITK), NIfTI (nibabel), other ITK formats
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".nii", ".nii.gz", ".mha", ".mhd", ".nrrd", ".nhdr",
                    ".dcm")
#: the key of a dataset item that stands for an input that could not be read (its value: the input's path)
FAILED_KEY = "failed_input"
_REASON_KEY = "failure_reason"
_READER_ERROR = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception): (.+)$", re.MULTILINE)


def first_existing(paths: Sequence[str | os.PathLike]) -> str:
    """The first of ``paths`` that is a file, else the first one (so that the error names the preferred path).

    The bundle's default checkpoint is ``models/model.pt`` (written by training on real data) and, in a fresh clone
    of the repository, the shipped weights at ``bundle/models/model.pt``.

    Args:
        paths: candidate paths, most preferred first.

    Returns:
        The chosen path as a string.

    Raises:
        ValueError: for an empty list.
    """
    if not paths:
        raise ValueError("first_existing needs at least one path")
    return str(next((p for p in paths if Path(p).is_file()), paths[0]))


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def _stem(path: Path) -> str:
    return path.name[: len(path.name) - len(_suffix(path))]


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


def _mask_names(images: Sequence[Path]) -> dict[Path, str]:
    """Each input's mask name (before postfix and extension): its stem; inputs whose names clash are named with
    their extension appended (``a.jpg`` -> ``a_jpg``), again until no name clashes (``a_jpg.bmp`` ->
    ``a_jpg_bmp``); inputs whose full names still clash get their position in the folder's listing."""
    names = {p: _stem(p) for p in images}
    full = {p: f"{_stem(p)}_{_suffix(p).lstrip('.').replace('.', '_')}" for p in images}
    while True:
        groups: dict[str, list[Path]] = {}
        for p, name in names.items():
            groups.setdefault(name, []).append(p)
        clashes = [group for group in groups.values() if len(group) > 1]
        if not clashes:
            return names
        for group in clashes:
            short = [p for p in group if names[p] != full[p]]
            for p in short or group:
                names[p] = full[p] if short else f"{full[p]}_{images.index(p)}"


class InferenceInputs:
    """The images of an inference run and the names of their masks.

    :attr:`datalist` lists the images directly in ``dataset_dir`` as ``{"image": path}`` items for a MONAI dataset;
    empty files are left out and listed in :attr:`failed` (nothing is decoded here: the workflow's loader reads
    each file once). :meth:`name_formatter` is ``SaveImaged``'s ``output_name_formatter``: it gives inputs that
    share a stem distinct mask names (see the module's docstring).

    Args:
        dataset_dir: the input folder (not searched recursively).
        output_dir: where the masks are written.
        output_postfix: the postfix of the masks' names.
        output_ext: the masks' file extension.
        extensions: the accepted input extensions.

    Example::

        >>> inputs = InferenceInputs("photos", "masks")  # doctest: +SKIP
        >>> inputs.datalist[0], inputs.mask_path("photos/IMD002.jpg")
        ({'image': 'photos/IMD002.jpg'}, PosixPath('masks/IMD002_seg.png'))
    """

    def __init__(
        self,
        dataset_dir: str | os.PathLike | None,
        output_dir: str | os.PathLike,
        output_postfix: str = "seg",
        output_ext: str = ".png",
        extensions: Iterable[str] = IMAGE_EXTENSIONS,
    ) -> None:
        self.dataset_dir = dataset_dir
        self.output_dir = Path(output_dir)
        self.layout = FolderLayout(output_dir=str(output_dir), postfix=output_postfix, extension=output_ext,
                                   parent=False, makedirs=False)
        self.extensions = tuple(extensions)
        self.failed: dict[str, str] = {}
        self._names: dict[str, str] | None = None
        self._datalist: list[dict[str, str]] | None = None

    @property
    def datalist(self) -> list[dict[str, str]]:
        """The inputs to segment, ``[{"image": path}, ...]``; the folder is scanned on first access.

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
        self._names = {str(p): name for p, name in _mask_names(images).items()}
        items = []
        for path in images:
            try:
                empty = path.stat().st_size == 0
            except OSError as e:
                self._fail(path, f"cannot be accessed: {e}")
                continue
            if empty:
                self._fail(path, "empty file (0 bytes)")
                continue
            items.append({"image": str(path)})
        logger.info(f"{len(items)} of {len(images)} image(s) in {self.dataset_dir} to segment")
        return items

    def _fail(self, path: Path, reason: str) -> None:
        self.failed[path.name] = reason
        logger.warning(f"skipping {path}: {reason}")

    def mask_name(self, image: str | os.PathLike) -> str:
        """The mask name of ``image`` before postfix and extension (its stem unless another input shares it; an image
        from elsewhere than ``dataset_dir``, e.g. when the bundle's postprocessing runs in another application, is
        named by its stem)."""
        if self._names is None and self.dataset_dir not in (None, ""):
            self.datalist  # noqa: B018  (scan the folder)
        return (self._names or {}).get(str(image), _stem(Path(image)))

    def mask_path(self, image: str | os.PathLike) -> Path:
        """Where the mask of ``image`` is written."""
        # FolderLayout drops the subject's extension: give it one to drop, so that dots in a stem survive
        return Path(self.layout.filename(subject=f"{self.mask_name(image)}.x"))

    def name_formatter(self, metadict: Mapping | None, saver: Any = None) -> dict[str, Any]:
        """``SaveImaged``'s ``output_name_formatter``: the subject name of the mask of the image in ``metadict``."""
        metadict = metadict or {}
        source = metadict.get(ImageMetaKey.FILENAME_OR_OBJ, getattr(saver, "_data_index", 0))
        return {"subject": f"{self.mask_name(source)}.x", "idx": metadict.get(ImageMetaKey.PATCH_INDEX)}


def failure_reason(exc: BaseException) -> str:
    """A short reason for a loading/preprocessing error: the first message in ``exc``'s chain that is not MONAI's
    ``applying transform`` wrapper; for a file no reader could decode, the first reader's error.

    Args:
        exc: the exception.

    Returns:
        The reason, one line.
    """
    chain: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and e not in chain:
        chain.append(e)
        e = e.__cause__ or e.__context__
    meaningful = [c for c in chain if not str(c).startswith("applying transform")] or chain
    message = str(meaningful[0])
    if "cannot find a suitable reader" in message:
        first = _READER_ERROR.search(message)
        return "not an image that can be decoded (wrong format or corrupt)" + (f": {first.group(1)}" if first else "")
    return message.splitlines()[0] if message else type(meaningful[0]).__name__


class SkipFailuresDataset(Dataset):
    """MONAI's :class:`~monai.data.Dataset` that returns an input whose transforms fail (a truncated or corrupt
    file, not an image whatever its name, a volume of several slices...) as a failure item
    ``{FAILED_KEY: path, "failure_reason": reason}`` instead of raising, so that a batch job goes on with the rest.

    Use it with batch size 1 and :func:`skip_failed_inputs` as the evaluator's ``iteration_update``.

    Args:
        data: ``[{"image": path}, ...]``.
        transform: the preprocessing.
        key: the key of the input's path in the items.

    Example::

        >>> SkipFailuresDataset([{"image": "notes.png"}], LoadImaged("image"))[0]  # doctest: +SKIP
        {'failed_input': 'notes.png', 'failure_reason': "not an image that can be decoded ..."}
    """

    def __init__(self, data: Sequence, transform: Any = None, key: str = "image") -> None:
        super().__init__(data=data, transform=transform)
        self.key = key

    def _transform(self, index: int) -> Any:
        try:
            return super()._transform(index)
        except Exception as e:  # readers and transforms raise anything from OSError to struct.error
            item = self.data[index]
            source = item.get(self.key) if isinstance(item, Mapping) else item
            return {FAILED_KEY: str(source), _REASON_KEY: failure_reason(e)}


def skip_failed_inputs(engine: Any, batchdata: Any) -> Any:
    """A ``SupervisedEvaluator`` ``iteration_update`` that passes over the failure items of
    :class:`SkipFailuresDataset`: such a batch gives the output ``{FAILED_KEY: {path: reason}}`` (no network, no
    postprocessing); any other batch runs the evaluator's own iteration.

    Args:
        engine: the evaluator.
        batchdata: the (collated, batch size 1) batch.

    Returns:
        The iteration's output.
    """
    if isinstance(batchdata, Mapping) and FAILED_KEY in batchdata:
        paths, reasons = batchdata[FAILED_KEY], batchdata[_REASON_KEY]
        paths, reasons = ([paths], [reasons]) if isinstance(paths, str) else (paths, reasons)
        for path, reason in zip(paths, reasons):
            logger.warning(f"skipping {path}: {reason}")
        return {FAILED_KEY: dict(zip(paths, reasons))}
    return engine._iteration(engine, batchdata)
