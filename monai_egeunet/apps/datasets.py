"""Dermoscopy segmentation datasets in the style of :mod:`monai.apps.datasets`: the ISIC challenge Task 1 archives
(2016, 2017, 2018), downloaded, checked and extracted, and PH2 from the archive its authors hand out on request.

Each class is a :class:`monai.data.CacheDataset` of ``{"image", "label"}`` items of one section (``training``,
``validation`` or ``test``). The extracted folder (:attr:`dataset_dir`) has the layout the bundle reads, so it also
works as the bundle's ``--dataset_dir``.

Example::

    >>> from monai_egeunet.apps import ISICDataset
    >>> train = ISICDataset("/data", year=2018, section="training", download=True)  # doctest: +SKIP
    >>> train.dataset_dir  # doctest: +SKIP
    PosixPath('/data/ISIC2018')
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import uuid
import zipfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from monai.apps.utils import HashCheckError, check_hash, download_url, extractall
from monai.config import PathLike
from monai.data import CacheDataset
from monai.transforms import LoadImaged

from monai_egeunet.data import DatasetError, check_pairs, find_pairs, prepare_datalists

__all__ = ["ISICDataset", "PH2Dataset", "extract_archive"]

SECTIONS = ("training", "validation", "test")
#: programs that unpack RAR archives (PH2 is handed out as PH2Dataset.rar), tried in this order
RAR_TOOLS = {"unrar": ["unrar", "x", "-idq", "-y"], "7z": ["7z", "x", "-y", "-bd"], "bsdtar": ["bsdtar", "-x", "-f"]}


def _unrar(archive: Path, output_dir: Path) -> None:
    for tool, command in RAR_TOOLS.items():
        if shutil.which(tool):
            output_dir.mkdir(parents=True)
            if tool == "bsdtar":
                args = [*command, str(archive), "-C", str(output_dir)]
            elif tool == "7z":
                args = [*command, f"-o{output_dir}", str(archive)]
            else:
                args = [*command, str(archive), f"{output_dir}{os.sep}"]
            result = subprocess.run(args, capture_output=True, text=True)
            if result.returncode != 0:
                raise DatasetError(f"{archive}: {tool} could not unpack it: {(result.stderr or result.stdout).strip()}")
            return
    raise DatasetError(
        f"{archive} is a RAR archive, which Python cannot unpack by itself: install unrar, 7z or bsdtar "
        f"(e.g. apt-get install libarchive-tools), or unpack it yourself and pass the folder instead"
    )


def extract_archive(
    archive: PathLike,
    target: PathLike,
    hash_val: str | None = None,
    hash_type: str = "md5",
    count: Callable[[Path], int] | None = None,
    expected: int | None = None,
) -> Path:
    """Extracts ``archive`` (zip, tar, tar.gz, or RAR through an external program) into the folder ``target``, all
    or nothing.

    The archive is checked (``hash_val`` when given; zip members against their CRC-32 while they are read) and
    unpacked into a temporary folder beside ``target``, which only becomes ``target`` once everything is out: an
    archive's single top-level folder is renamed to ``target``, several top-level entries go into it. A
    failure leaves no ``target`` and no temporary folder behind.

    Args:
        archive: the archive file.
        target: the folder to create; it must not exist.
        hash_val: the archive's expected checksum; None to skip that check.
        hash_type: the checksum's algorithm (``md5``, ``sha1``, ``sha256``, ``sha512``).
        count: counts the images of an extracted folder, for the ``expected`` check.
        expected: how many images the archive holds (the number the challenge published); None to skip.

    Returns:
        ``target``.

    Raises:
        DatasetError: when the archive is missing, fails its checksum, is truncated or corrupt, holds another
            number of images than ``expected``, or is a RAR archive and no program to unpack it is installed.
        FileExistsError: when ``target`` exists.
    """
    archive, target = Path(archive), Path(target)
    if target.exists():
        raise FileExistsError(f"{target} exists: extract_archive does not overwrite it")
    if not archive.is_file():
        raise DatasetError(f"archive {archive} does not exist")
    if hash_val and not check_hash(archive, hash_val, hash_type):
        raise DatasetError(
            f"{archive} fails its {hash_type} check (expected {hash_val}): it is damaged, truncated or another "
            f"file; delete it and download it again"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        if archive.suffix.lower() == ".rar":
            _unrar(archive, tmp)
        else:
            extractall(archive, tmp, has_base=False)
        entries = list(tmp.iterdir())
        content = entries[0] if len(entries) == 1 and entries[0].is_dir() else tmp
        if expected is not None and count is not None and count(content) != expected:
            raise DatasetError(
                f"{archive} holds {count(content)} images where {expected} were published: the archive is "
                f"incomplete or another version; delete it and download it again"
            )
        os.replace(content, target)
    except (zipfile.BadZipFile, tarfile.TarError, zlib.error, EOFError) as e:
        raise DatasetError(f"{archive} is truncated or corrupt ({e}): delete it and download it again") from e
    except NotImplementedError as e:
        raise DatasetError(f"{archive}: not an archive this can unpack (zip, tar, tar.gz, rar): {e}") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _section_items(dataset_dir: Path, section: str, split_from_training: bool, val_frac: float, seed: int,
                   split_file: PathLike | None) -> list[dict]:
    """The section's ``{"image", "label"}`` items, split the way the bundle splits ``dataset_dir``."""
    if split_from_training or split_file is not None:
        lists = prepare_datalists(dataset_dir, None, val_fraction=val_frac, seed=seed, split_file=split_file,
                                  check=False)
        items = lists[section]
    else:
        found, _ = find_pairs(dataset_dir)
        items = [{"image": it["image"], "label": it["label"]} for it in found if it.get("split", "training") == section]
    if not items:
        raise DatasetError(f"{dataset_dir} holds no {section} images")
    return items


class _SegmentationDataset(CacheDataset):
    """What the two datasets share: the section's items, checked like the bundle checks them, in a CacheDataset."""

    def _init_cache(self, data: list[dict], transform, check: bool, **cache_kwargs) -> None:
        if check:
            check_pairs(data)
        if transform == ():
            transform = LoadImaged(["image", "label"])
        CacheDataset.__init__(self, data=data, transform=transform, **cache_kwargs)


class ISICDataset(_SegmentationDataset):
    """The ISIC challenge's lesion boundary segmentation data (2016 Part 1, 2017 Part 1, 2018 Task 1): dermoscopy
    images with expert lesion masks, from the challenge's archives.

    With ``download=True`` the section's two archives (images and ground truth) are fetched from the challenge's
    storage into ``root_dir`` (kept there, so a second call downloads nothing) and extracted into
    ``root_dir/ISIC<year>/<archive name>/``; archives already in ``root_dir`` (fetched with a browser, say) are
    extracted without ``download``. The challenge publishes no checksums, so each archive is checked by what it
    carries (the zip's CRC-32 of every member) and by the number of images the challenge published for it; pass
    ``hash_vals`` to check the archives against checksums of your own. Every pair is then checked as the bundle
    checks it (see :func:`monai_egeunet.data.check_pairs`).

    Sections are the challenge's own: 2017 and 2018 have ``training``, ``validation`` and ``test`` sets; 2016 has
    ``training`` and ``test``, and ``val_frac`` there holds out a seeded share of the training images as the
    ``validation`` section (the bundle's ``--val_fraction`` split, the rest is ``training``).

    Args:
        root_dir: where the archives are (or are downloaded to) and extracted.
        year: 2016, 2017 or 2018.
        section: ``training``, ``validation`` or ``test``.
        transform: transforms of each ``{"image", "label"}`` item; default ``LoadImaged(["image", "label"])``.
        download: fetch the section's archives that are not in ``root_dir`` yet.
        val_frac: 2016 only: share of the training images held out as the validation section.
        seed: seed of that split.
        hash_vals: expected checksums of archives, by file name, as ``"md5:<hex>"`` or ``"sha256:<hex>"``.
        check: check every pair (readable, same size, binary mask) before caching.
        cache_num, cache_rate, num_workers, progress, copy_cache, as_contiguous, runtime_cache: as
            :class:`monai.data.CacheDataset` (``progress`` also shows the download's).

    Raises:
        ValueError: for an unknown ``year`` or ``section``, a ``validation`` section of 2016 without ``val_frac``,
            or ``val_frac`` with a year that has its own validation set.
        RuntimeError: when an archive is neither extracted nor in ``root_dir`` and ``download`` is False.
        DatasetError: when an archive fails its checks (nothing of it is left extracted), or a pair fails the
            bundle's checks.

    Example::

        >>> ds = ISICDataset("/data", year=2016, section="validation", val_frac=0.2, download=True)  # doctest: +SKIP
        >>> len(ds)  # doctest: +SKIP
        180
    """

    base_url = "https://isic-challenge-data.s3.amazonaws.com/{year}/"
    #: the two archives (images, ground truth) of each year's sections
    resources: dict[int, dict[str, tuple[str, str]]] = {
        2016: {
            "training": ("ISBI2016_ISIC_Part1_Training_Data.zip", "ISBI2016_ISIC_Part1_Training_GroundTruth.zip"),
            "test": ("ISBI2016_ISIC_Part1_Test_Data.zip", "ISBI2016_ISIC_Part1_Test_GroundTruth.zip"),
        },
        2017: {
            "training": ("ISIC-2017_Training_Data.zip", "ISIC-2017_Training_Part1_GroundTruth.zip"),
            "validation": ("ISIC-2017_Validation_Data.zip", "ISIC-2017_Validation_Part1_GroundTruth.zip"),
            "test": ("ISIC-2017_Test_v2_Data.zip", "ISIC-2017_Test_v2_Part1_GroundTruth.zip"),
        },
        2018: {
            "training": ("ISIC2018_Task1-2_Training_Input.zip", "ISIC2018_Task1_Training_GroundTruth.zip"),
            "validation": ("ISIC2018_Task1-2_Validation_Input.zip", "ISIC2018_Task1_Validation_GroundTruth.zip"),
            "test": ("ISIC2018_Task1-2_Test_Input.zip", "ISIC2018_Task1_Test_GroundTruth.zip"),
        },
    }
    #: images per section, as the challenge published them (each archive of the section holds that many)
    num_images: dict[int, dict[str, int]] = {
        2016: {"training": 900, "test": 379},
        2017: {"training": 2000, "validation": 150, "test": 600},
        2018: {"training": 2594, "validation": 100, "test": 1000},
    }
    _IMAGE = re.compile(r"ISIC_\d+(_segmentation)?\.(jpg|jpeg|png)", re.IGNORECASE)

    def __init__(
        self,
        root_dir: PathLike,
        year: int = 2018,
        section: str = "training",
        transform: Sequence[Callable] | Callable = (),
        download: bool = False,
        val_frac: float = 0.0,
        seed: int = 0,
        hash_vals: Mapping[str, str] | None = None,
        check: bool = True,
        cache_num: int = sys.maxsize,
        cache_rate: float = 1.0,
        num_workers: int | None = 1,
        progress: bool = True,
        copy_cache: bool = True,
        as_contiguous: bool = True,
        runtime_cache: bool = False,
    ) -> None:
        if year not in self.resources:
            raise ValueError(f"year must be one of {sorted(self.resources)}, got {year!r}")
        if section not in SECTIONS:
            raise ValueError(f"section must be one of {SECTIONS}, got {section!r}")
        own_validation = "validation" in self.resources[year]
        if val_frac and own_validation:
            raise ValueError(f"ISIC {year} has its own validation set: leave val_frac at 0")
        if section == "validation" and not own_validation and not val_frac:
            raise ValueError(
                f"ISIC {year} has no validation set: pass val_frac (e.g. 0.3) to hold out a seeded share of the "
                f"training images, as the bundle's --val_fraction does"
            )
        for name, value in (hash_vals or {}).items():
            if str(value).partition(":")[0].lower() not in ("md5", "sha1", "sha256", "sha512") or ":" not in value:
                raise ValueError(f"hash_vals[{name!r}] must be 'md5:<hex>', 'sha1:...', 'sha256:...' or 'sha512:...'")
        root_dir = Path(root_dir)
        if not root_dir.is_dir():
            raise ValueError(f"root_dir {root_dir} must be a directory")
        self.year, self.section = year, section
        self.dataset_dir = root_dir / f"ISIC{year}"
        archive_section = "training" if section == "validation" and not own_validation else section
        for name in self.resources[year][archive_section]:
            self._fetch(root_dir, name, archive_section, download, hash_vals or {}, progress)
        data = _section_items(self.dataset_dir, section, bool(val_frac), val_frac, seed, None)
        self._init_cache(data, transform, check, cache_num=cache_num, cache_rate=cache_rate, num_workers=num_workers,
                         progress=progress, copy_cache=copy_cache, as_contiguous=as_contiguous,
                         runtime_cache=runtime_cache)

    def _count(self, folder: Path) -> int:
        return sum(1 for p in folder.rglob("*") if p.is_file() and self._IMAGE.fullmatch(p.name))

    def _fetch(self, root_dir: Path, name: str, section: str, download: bool, hash_vals: Mapping[str, str],
               progress: bool) -> None:
        target = self.dataset_dir / name.rsplit(".", 1)[0]
        if target.is_dir():
            return
        archive = root_dir / name
        hash_type, _, hash_val = hash_vals.get(name, "md5:").partition(":")
        if not archive.is_file():
            if not download:
                raise RuntimeError(
                    f"cannot find {target} nor the archive {archive}: use download=True, or put the archive "
                    f"(from {self.base_url.format(year=self.year)}{name}) in {root_dir}"
                )
            try:
                download_url(self.base_url.format(year=self.year) + name, archive, hash_val or None, hash_type,
                             progress=progress)
            except HashCheckError as e:
                raise DatasetError(f"{name} downloaded from the challenge fails its {hash_type} check: {e}") from e
        extract_archive(archive, target, hash_val or None, hash_type, count=self._count,
                        expected=self.num_images[self.year][section])


class PH2Dataset(_SegmentationDataset):
    """The PH2 dermoscopy database (Hospital Pedro Hispano, Matosinhos; Mendonca et al., EMBC 2013): 200 images of
    melanocytic lesions with expert lesion masks.

    PH2 is handed out by its authors after a registration (https://www.fc.up.pt/addi/ph2%20database.html), so
    nothing is downloaded: pass the archive you received as ``archive`` (``PH2Dataset.rar``, unpacked with unrar,
    7z or bsdtar, whichever is installed; or a zip or tar of it) and it is extracted into ``root_dir/PH2Dataset``
    (all or nothing, see :func:`extract_archive`); later calls read that folder. A copy in PH2's own nested layout
    or a flat ``images/`` + ``masks/`` folder already at ``root_dir/PH2Dataset`` is read as it is.

    PH2 has no official split: the whole set is the ``training`` section unless ``split_file`` (ids, e.g. the
    project's ``data/ph2_split.json``: 140 train, 60 test) gives the ``test`` section, and ``val_frac`` holds out a
    seeded share of the training images as ``validation``, the way the bundle's ``--split_file`` and
    ``--val_fraction`` do.

    Args:
        root_dir: where PH2 is (or is extracted to), as ``root_dir/PH2Dataset``.
        section: ``training``, ``validation`` or ``test``.
        archive: the archive to extract when ``root_dir/PH2Dataset`` does not exist yet.
        transform: transforms of each ``{"image", "label"}`` item; default ``LoadImaged(["image", "label"])``.
        split_file: JSON of ids, ``{"train": [...], "test": [...]}`` (optionally ``"val"``).
        val_frac: share of the training images held out as the validation section.
        seed: seed of that split.
        hash_val: the archive's expected checksum (PH2's authors publish none); None to skip.
        hash_type: its algorithm.
        check: check every pair (readable, same size, binary mask) before caching.
        cache_num, cache_rate, num_workers, progress, copy_cache, as_contiguous, runtime_cache: as
            :class:`monai.data.CacheDataset`.

    Raises:
        ValueError: for an unknown ``section``, or a section the split leaves empty.
        RuntimeError: when there is neither ``root_dir/PH2Dataset`` nor an ``archive``.
        DatasetError: when the archive fails its checks (nothing of it is left extracted), or a pair fails the
            bundle's checks.

    Example::

        >>> test = PH2Dataset("/data", section="test", archive="~/Downloads/PH2Dataset.rar",
        ...                   split_file="data/ph2_split.json")  # doctest: +SKIP
        >>> len(test)  # doctest: +SKIP
        60
    """

    homepage = "https://www.fc.up.pt/addi/ph2%20database.html"
    dataset_folder_name = "PH2Dataset"
    num_images = 200
    _IMAGE = re.compile(r"IMD\d+\.bmp", re.IGNORECASE)

    def __init__(
        self,
        root_dir: PathLike,
        section: str = "training",
        archive: PathLike | None = None,
        transform: Sequence[Callable] | Callable = (),
        split_file: PathLike | None = None,
        val_frac: float = 0.0,
        seed: int = 0,
        hash_val: str | None = None,
        hash_type: str = "md5",
        check: bool = True,
        cache_num: int = sys.maxsize,
        cache_rate: float = 1.0,
        num_workers: int | None = 1,
        progress: bool = True,
        copy_cache: bool = True,
        as_contiguous: bool = True,
        runtime_cache: bool = False,
    ) -> None:
        if section not in SECTIONS:
            raise ValueError(f"section must be one of {SECTIONS}, got {section!r}")
        if section == "test" and split_file is None:
            raise ValueError("PH2 has no official test set: pass split_file (e.g. the project's data/ph2_split.json)")
        if section == "validation" and not val_frac:
            raise ValueError("PH2 has no official validation set: pass val_frac (e.g. 0.3)")
        root_dir = Path(root_dir)
        if not root_dir.is_dir():
            raise ValueError(f"root_dir {root_dir} must be a directory")
        self.section = section
        self.dataset_dir = root_dir / self.dataset_folder_name
        if not self.dataset_dir.is_dir():
            if archive is None:
                raise RuntimeError(
                    f"cannot find {self.dataset_dir}: PH2 is handed out after a registration at {self.homepage}; "
                    f"pass the archive you received as archive=..."
                )
            extract_archive(Path(archive).expanduser(), self.dataset_dir, hash_val, hash_type, count=self._count,
                            expected=self.num_images)
        data = _section_items(self.dataset_dir, section, True, val_frac, seed, split_file)
        self._init_cache(data, transform, check, cache_num=cache_num, cache_rate=cache_rate, num_workers=num_workers,
                         progress=progress, copy_cache=copy_cache, as_contiguous=as_contiguous,
                         runtime_cache=runtime_cache)

    def _count(self, folder: Path) -> int:
        return sum(1 for p in folder.glob("**/*_Dermoscopic_Image/*") if self._IMAGE.fullmatch(p.name))
