"""Finding image/mask pairs in the dataset layouts users have, splitting them, and checking them before training."""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from monai_egeunet.utils import atomic_write

__all__ = ["DatasetError", "find_pairs", "check_pairs", "load_split_ids", "prepare_datalists", "write_json_atomic"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
#: suffixes a mask's name may add to its image's name, most specific first
MASK_SUFFIXES = ("_segmentation", "_lesion", "_mask", "")
_SPLIT_WORDS = {"train": "training", "training": "training", "val": "validation", "validation": "validation",
                "test": "test", "testing": "test"}


class DatasetError(ValueError):
    """A dataset folder, datalist or image/mask pair that cannot be used; the message names the file or folder."""


def write_json_atomic(path: str | os.PathLike, obj: object) -> Path:
    """Writes ``obj`` as JSON to ``path`` through :func:`monai_egeunet.utils.atomic_write`: readers never see half a
    file."""
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=1)
    return Path(path)


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _split_of(parts: Iterable[str]) -> str | None:
    """'training', 'validation' or 'test' when a folder name on the path says so (ISIC_..._Validation_Input)."""
    for part in parts:
        for word in re.split(r"[^a-z]+", part.lower()):
            if word in _SPLIT_WORDS:
                return _SPLIT_WORDS[word]
    return None


def _pair_flat(images_dir: Path, masks_dir: Path, split: str | None = None) -> list[dict]:
    masks = {p.stem: p for p in _images_in(masks_dir)}
    items, orphans = [], []
    for image in _images_in(images_dir):
        mask = next((masks.pop(image.stem + s) for s in MASK_SUFFIXES if image.stem + s in masks), None)
        if mask is None:
            orphans.append(image.name)
            continue
        item = {"image": str(image), "label": str(mask), "id": image.stem}
        if split:
            item["split"] = split
        items.append(item)
    if orphans:
        raise DatasetError(
            f"{len(orphans)} image(s) in {images_dir} have no mask in {masks_dir} (a mask is named like its image, "
            f"optionally with {', '.join(s for s in MASK_SUFFIXES if s)}): {', '.join(orphans[:5])}"
        )
    if masks:
        raise DatasetError(
            f"{len(masks)} mask(s) in {masks_dir} have no image in {images_dir}: "
            f"{', '.join(p.name for p in list(masks.values())[:5])}"
        )
    return items


def _find_original(root: Path) -> list[dict] | None:
    """The original EGE-UNet release's layout: train/images, train/masks, val/images, val/masks."""
    if not ((root / "train" / "images").is_dir() and (root / "train" / "masks").is_dir()):
        return None
    items = _pair_flat(root / "train" / "images", root / "train" / "masks", "training")
    if (root / "val" / "images").is_dir():
        items += _pair_flat(root / "val" / "images", root / "val" / "masks", "validation")
    return items


def _find_flat(root: Path) -> list[dict] | None:
    if not ((root / "images").is_dir() and (root / "masks").is_dir()):
        return None
    return _pair_flat(root / "images", root / "masks")


def _find_ph2(root: Path) -> list[dict] | None:
    """PH2's own layout: IMDxxx/IMDxxx_Dermoscopic_Image/IMDxxx.bmp and IMDxxx/IMDxxx_lesion/IMDxxx_lesion.bmp."""
    images = sorted(root.glob("**/*_Dermoscopic_Image/*.bmp"))
    if not images:
        return None
    items = []
    for image in images:
        case = image.parent.parent
        masks = sorted((case / f"{image.stem}_lesion").glob(f"{image.stem}_lesion.*"))
        if not masks:
            raise DatasetError(f"PH2 image {image} has no mask at {case / f'{image.stem}_lesion' / (image.stem + '_lesion.bmp')}")
        items.append({"image": str(image), "label": str(masks[0]), "id": image.stem})
    return items


def _find_isic(root: Path) -> list[dict] | None:
    """ISIC 2016/2017/2018 Task 1 archives: image folders beside *GroundTruth* folders of ISIC_xxxxxxx_segmentation.png."""
    truth_dirs = sorted(p for p in [root, *root.glob("*"), *root.glob("*/*")] if p.is_dir() and "groundtruth" in p.name.lower())
    if not truth_dirs:
        return None
    masks: dict[str, Path] = {}
    for d in truth_dirs:
        for p in _images_in(d):
            m = re.match(r"(ISIC_\d+)_segmentation$", p.stem, re.IGNORECASE)
            if m:
                masks[m.group(1)] = p
    image_dirs = sorted(
        p for p in [root, *root.glob("*"), *root.glob("*/*")]
        if p.is_dir() and "groundtruth" not in p.name.lower() and any(q.stem.startswith("ISIC_") for q in _images_in(p))
    )
    items, orphans = [], []
    for d in image_dirs:
        for image in _images_in(d):
            if not re.fullmatch(r"ISIC_\d+", image.stem):  # the 2017 archives also hold *_superpixels.png
                continue
            mask = masks.pop(image.stem, None)
            if mask is None:
                orphans.append(str(image))
                continue
            item = {"image": str(image), "label": str(mask), "id": image.stem}
            split = _split_of([d.name])
            if split:
                item["split"] = split
            items.append(item)
    if orphans:
        raise DatasetError(f"{len(orphans)} ISIC image(s) have no *_segmentation mask: {', '.join(orphans[:5])}")
    if masks:
        raise DatasetError(f"{len(masks)} ISIC mask(s) have no image: {', '.join(str(p) for p in list(masks.values())[:5])}")
    return items


def _find_datalist(path: Path) -> list[dict]:
    """A MONAI datalist JSON: {"training": [{"image": ..., "label": ...}], "validation": [...], "test": [...]}."""
    try:
        content = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DatasetError(f"cannot read the datalist {path}: {e}") from e
    if not isinstance(content, dict) or "training" not in content:
        raise DatasetError(f"datalist {path} needs a 'training' list of {{'image', 'label'}} items")
    items = []
    for split in ("training", "validation", "test"):
        for i, entry in enumerate(content.get(split, [])):
            if not isinstance(entry, dict) or "image" not in entry or "label" not in entry:
                raise DatasetError(f"datalist {path}: {split}[{i}] needs 'image' and 'label', got {entry!r}")
            image, label = (Path(entry[k]) for k in ("image", "label"))
            # relative paths are relative to the datalist, as monai.data.load_decathlon_datalist reads them
            image, label = (p if p.is_absolute() else path.parent / p for p in (image, label))
            items.append({"image": str(image), "label": str(label), "id": image.stem, "split": split})
    return items


LAYOUTS = (("original EGE-UNet", _find_original), ("images/ + masks/", _find_flat), ("PH2", _find_ph2), ("ISIC", _find_isic))


def find_pairs(dataset_dir: str | os.PathLike) -> tuple[list[dict], str]:
    """Finds the image/mask pairs of a dataset, recognising its layout.

    Layouts, tried in this order: the original EGE-UNet release's (``train/images``, ``train/masks``,
    ``val/images``, ``val/masks``); a flat ``images/`` + ``masks/`` folder (a mask named like its image, optionally
    with ``_segmentation``, ``_lesion`` or ``_mask``); PH2's own (``IMDxxx/IMDxxx_Dermoscopic_Image/IMDxxx.bmp`` +
    ``IMDxxx/IMDxxx_lesion/IMDxxx_lesion.bmp``); the ISIC 2016/2017/2018 Task 1 archives (image folders beside
    ``*GroundTruth*`` folders of ``ISIC_xxxxxxx_segmentation.png``); or a MONAI datalist JSON file.

    Args:
        dataset_dir: the dataset folder, or a datalist JSON file.

    Returns:
        The items ``{"image", "label", "id"}`` (plus ``"split"`` when the layout says which split an item is in:
        ``training``, ``validation`` or ``test``), sorted by id, and the layout's name.

    Raises:
        DatasetError: when the folder does not exist, has no recognised layout or no pairs, or an image has no
            mask (or the reverse).

    Example::

        >>> items, layout = find_pairs("../shared/data/ph2")  # doctest: +SKIP
        >>> layout, len(items)
        ('images/ + masks/', 200)
    """
    root = Path(dataset_dir).expanduser()
    if not root.exists():
        raise DatasetError(f"dataset_dir {root} does not exist")
    if root.is_file():
        if root.suffix.lower() != ".json":
            raise DatasetError(f"dataset_dir {root} is a file but not a datalist .json")
        items, layout = _find_datalist(root), "datalist"
    else:
        for layout, finder in LAYOUTS:
            found = finder(root)
            if found is not None:
                items = found
                break
        else:
            raise DatasetError(
                f"dataset_dir {root} has no layout this bundle knows: expected images/ + masks/, train/images + "
                f"train/masks (+ val/), PH2's IMDxxx/IMDxxx_Dermoscopic_Image folders, ISIC *GroundTruth* folders, "
                f"or a datalist .json"
            )
    if not items:
        raise DatasetError(f"dataset_dir {root} ({layout} layout) holds no image/mask pairs")
    ids = [it["id"] for it in items]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes and layout != "datalist":
        raise DatasetError(f"dataset_dir {root}: several images share the id(s) {', '.join(dupes[:5])}")
    return sorted(items, key=lambda it: it["id"]), layout


def _open(path: str, what: str) -> Image.Image:
    try:
        img = Image.open(path)
        img.size  # noqa: B018  (header parsed)
        return img
    except FileNotFoundError as e:
        raise DatasetError(f"{what} {path} does not exist") from e
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise DatasetError(f"{what} {path} cannot be read as an image: {e}") from e


def check_pairs(items: Sequence[dict]) -> None:
    """Checks every pair before training: both files readable, same size, and the mask binary.

    Images are checked from their header (cheap); masks are decoded fully to check their values.

    Args:
        items: ``{"image", "label"}`` dicts.

    Raises:
        DatasetError: naming the first file that is missing, unreadable, empty, differently sized from its image,
            or a mask with more than two values (e.g. a JPEG-compressed or soft mask).
    """
    for item in items:
        image = _open(item["image"], "image")
        mask = _open(item["label"], "mask")
        if 0 in image.size:
            raise DatasetError(f"image {item['image']} is empty ({image.size[0]}x{image.size[1]})")
        if image.size != mask.size:
            raise DatasetError(
                f"mask {item['label']} is {mask.size[0]}x{mask.size[1]} (WxH) but its image {item['image']} is "
                f"{image.size[0]}x{image.size[1]}"
            )
        try:
            values = np.unique(np.asarray(mask.convert("L")))
        except (OSError, ValueError) as e:
            raise DatasetError(f"mask {item['label']} cannot be decoded: {e}") from e
        if len(values) > 2:
            raise DatasetError(
                f"mask {item['label']} is not binary: it has {len(values)} values ({', '.join(map(str, values[:6]))}"
                f"{', ...' if len(values) > 6 else ''}); save masks losslessly (PNG/BMP) with one background and one "
                f"lesion value"
            )


def load_split_ids(split_file: str | os.PathLike) -> dict[str, list[str]]:
    """Reads a split file: ``{"train": [ids], "test": [ids]}`` (optionally ``"val"``), like the project's PH2 split.

    Args:
        split_file: path of the JSON file.

    Returns:
        ``{"training": [...], "validation": [...], "test": [...]}`` id lists (missing ones empty).

    Raises:
        DatasetError: when the file cannot be read or lists no training ids.
    """
    try:
        content = json.loads(Path(split_file).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DatasetError(f"cannot read the split file {split_file}: {e}") from e
    out: dict[str, list[str]] = {"training": [], "validation": [], "test": []}
    for key, ids in content.items():
        if key in _SPLIT_WORDS and isinstance(ids, list):
            out[_SPLIT_WORDS[key]] += [str(i) for i in ids]
    if not out["training"]:
        raise DatasetError(f"split file {split_file} lists no 'train' ids")
    return out


def _strip(item: dict) -> dict:
    return {"image": item["image"], "label": item["label"]}


def prepare_datalists(
    dataset_dir: str | os.PathLike | None,
    output_dir: str | os.PathLike | None = None,
    val_fraction: float = 0.3,
    seed: int = 0,
    split_file: str | os.PathLike | None = None,
    check: bool = True,
) -> dict[str, list[dict]]:
    """Finds, checks and splits a dataset into the ``training``, ``validation`` and ``test`` lists of a bundle.

    The split comes, in this order of preference, from ``split_file`` (ids; its training ids are further split
    into training and validation unless it also lists validation ids), from the layout (ISIC archive folders, the
    original release's ``train``/``val``, a datalist's lists), or from a seeded shuffle of the sorted ids: a
    ``val_fraction`` share (0.3: the paper's 7:3 protocol) goes to validation; 0 trains on the whole pool with no
    validation list (the model kept is then the final epoch's). The result is written to
    ``output_dir/datalist.json`` (a MONAI datalist that can be passed back as ``dataset_dir`` to repeat the run).

    Args:
        dataset_dir: a dataset folder or datalist JSON (see :func:`find_pairs`); None for the embedded synthetic
            demo set, generated on first use (see :func:`make_synthetic_dataset`).
        output_dir: where to write ``datalist.json``; None to write nothing.
        val_fraction: share of the training pool held out for validation when no split says otherwise; 0 for none.
        seed: seed of the shuffle.
        split_file: optional JSON of ids, e.g. ``{"train": [...], "test": [...]}``.
        check: check every pair (sizes, readability, binary masks) first; see :func:`check_pairs`.

    Returns:
        ``{"training": [...], "validation": [...], "test": [...]}`` lists of ``{"image", "label"}`` dicts.

    Raises:
        DatasetError: for an unusable dataset (see :func:`find_pairs`, :func:`check_pairs`), split ids that are
            not in the dataset, an empty training list, or an empty validation list while ``val_fraction`` > 0.
        ValueError: when ``val_fraction`` is not in [0, 1).

    Example::

        >>> lists = prepare_datalists(None, "eval")  # the synthetic demo set  # doctest: +SKIP
        >>> sorted(lists)
        ['test', 'training', 'validation']
    """
    if not 0.0 <= float(val_fraction) < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1) (0: no validation, keep the final epoch), got {val_fraction}")
    if dataset_dir is None or str(dataset_dir) == "":
        from monai_egeunet.data.synthetic import default_synthetic_dir, make_synthetic_dataset

        dataset_dir = make_synthetic_dataset(default_synthetic_dir())
    items, layout = find_pairs(dataset_dir)
    lists: dict[str, list[dict]] = {"training": [], "validation": [], "test": []}
    if split_file:
        ids = load_split_ids(split_file)
        by_id = {it["id"]: it for it in items}
        unknown = [i for split in ids.values() for i in split if i not in by_id]
        if unknown:
            raise DatasetError(f"split file {split_file} names ids not in {dataset_dir}: {', '.join(unknown[:5])}")
        for split, split_ids in ids.items():
            lists[split] = [by_id[i] for i in split_ids]
    else:
        for it in items:
            lists[it.get("split", "training")].append(it)
    if not lists["validation"] and float(val_fraction) > 0:
        pool = sorted(lists["training"], key=lambda it: it["id"])
        random.Random(seed).shuffle(pool)
        n_val = max(1, round(len(pool) * float(val_fraction)))
        lists["validation"], lists["training"] = pool[:n_val], sorted(pool[n_val:], key=lambda it: it["id"])
        lists["validation"].sort(key=lambda it: it["id"])
    for split in ("training", "validation") if float(val_fraction) > 0 else ("training",):
        if not lists[split]:
            raise DatasetError(f"dataset_dir {dataset_dir} ({layout} layout) gives an empty {split} list")
    if check:
        check_pairs([it for split in lists.values() for it in split])
    result = {split: [_strip(it) for it in split_items] for split, split_items in lists.items()}
    if output_dir is not None:
        write_json_atomic(Path(output_dir) / "datalist.json", {"dataset_dir": str(dataset_dir), "layout": layout,
                                                               "seed": seed, "val_fraction": val_fraction, **result})
    return result
