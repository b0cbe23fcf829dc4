"""The ISIC and PH2 dataset classes, on archives the tests build in the challenge's and PH2's layouts (downloads
cannot run here: the ISIC download goes through MONAI's downloader to ``file://`` URLs of a local folder)."""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from monai.bundle import ConfigWorkflow
from PIL import Image

from monai_egeunet.apps import ISICDataset, PH2Dataset, extract_archive
from monai_egeunet.data import DatasetError, make_synthetic_dataset, prepare_datalists
from tests.utils import PH2_DIR, PH2_SPLIT, REPO_ROOT, require

COUNTS = {"training": 6, "validation": 2, "test": 3}


@pytest.fixture(scope="module")
def pictures(tmp_path_factory) -> list[tuple[Image.Image, Image.Image]]:
    """(RGB image, binary mask) pairs of the synthetic set, 64x64."""
    root = make_synthetic_dataset(tmp_path_factory.mktemp("pictures"), num_images=12, image_size=(64, 64))
    return [(Image.open(root / "images" / f"SYN_{i:03d}.png").convert("RGB"),
             Image.open(root / "masks" / f"SYN_{i:03d}_lesion.png").convert("L")) for i in range(12)]


def _zip(path: Path, files: dict[str, Image.Image | str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, content in files.items():
            if isinstance(content, str):
                zf.writestr(name, content)
            else:
                buffer = Path(path.parent / f".member{Path(name).suffix}")
                content.save(buffer)
                zf.write(buffer, name)
                buffer.unlink()
    return path


def _isic_server(folder: Path, pictures, year: int, counts: dict[str, int]) -> Path:
    """The challenge's archives of ``year`` under ``folder/<year>/``, as the challenge lays them out: one folder
    per archive, ``ISIC_xxxxxxx.jpg`` images (2017: with ``*_superpixels.png`` beside them) and
    ``ISIC_xxxxxxx_segmentation.png`` masks (2016: ``_Segmentation``)."""
    first = 0
    for section, n in counts.items():
        images_zip, truth_zip = ISICDataset.resources[year][section]
        images, truths = images_zip[:-4], truth_zip[:-4]
        suffix = "_Segmentation" if year == 2016 else "_segmentation"
        members = {f"{images}/LICENSE.txt": "CC BY-NC", f"{images}/ATTRIBUTION.txt": "ISIC Archive"}
        masks = {f"{truths}/LICENSE.txt": "CC BY-NC"}
        for k in range(first, first + n):
            image, mask = pictures[k % len(pictures)]
            members[f"{images}/ISIC_{k:07d}.jpg"] = image
            if year == 2017:
                members[f"{images}/ISIC_{k:07d}_superpixels.png"] = image
            masks[f"{truths}/ISIC_{k:07d}{suffix}.png"] = mask
        _zip(folder / str(year) / images_zip, members)
        _zip(folder / str(year) / truth_zip, masks)
        first += n
    return folder


@pytest.fixture
def isic(tmp_path, pictures, monkeypatch):
    """A local stand-in for the challenge's storage and a fresh root_dir; the class looks for this many images."""
    server = _isic_server(tmp_path / "server", pictures, 2018, COUNTS)
    monkeypatch.setattr(ISICDataset, "base_url", server.as_uri() + "/{year}/")
    monkeypatch.setattr(ISICDataset, "num_images", {**ISICDataset.num_images, 2018: COUNTS})
    (tmp_path / "data").mkdir()
    return server, tmp_path / "data"


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_isic_download_extract_sections_and_bundle(isic, tmp_path):
    server, root = isic
    train = ISICDataset(root, year=2018, section="training", download=True, progress=False)
    assert len(train) == 6 and train.dataset_dir == root / "ISIC2018"
    item = train[0]
    assert tuple(item["image"].shape) == (64, 64, 3) and set(np.unique(np.asarray(item["label"]))) <= {0, 255}
    assert sorted(p.name for p in root.glob("*.zip")) == sorted(ISICDataset.resources[2018]["training"])  # kept
    for name in ISICDataset.resources[2018]["training"]:
        assert (root / name).read_bytes() == (server / "2018" / name).read_bytes()

    # extracted once: a second dataset reads the folders, without the archives or a download
    for archive in root.glob("*.zip"):
        archive.unlink()
    assert len(ISICDataset(root, year=2018, section="training", progress=False)) == 6
    validation = ISICDataset(root, year=2018, section="validation", download=True, progress=False)
    test = ISICDataset(root, year=2018, section="test", download=True, progress=False, cache_rate=0.0)
    ids = {s: {Path(it["image"]).stem for it in ds.data} for s, ds in
           (("training", train), ("validation", validation), ("test", test))}
    assert {s: len(v) for s, v in ids.items()} == COUNTS and len(set.union(*ids.values())) == sum(COUNTS.values())
    assert not any(p.name.startswith(".") for p in (root / "ISIC2018").iterdir())

    # the bundle reads the downloaded folder with the same sections
    lists = prepare_datalists(train.dataset_dir)
    assert {s: {Path(it["image"]).stem for it in v} for s, v in lists.items()} == ids
    wf = ConfigWorkflow(config_file=str(REPO_ROOT / "configs" / "train.json"),
                        meta_file=str(REPO_ROOT / "configs" / "metadata.json"), logging_file=False,
                        workflow_type="train", bundle_root=str(tmp_path / "bundle"), dataset_dir=str(train.dataset_dir),
                        roi_size=[64, 64], batch_size=4, num_workers=0, max_epochs=1)
    wf.initialize()
    wf.run()
    wf.finalize()
    written = json.loads((tmp_path / "bundle" / "eval" / "datalist.json").read_text())
    assert written["layout"] == "ISIC" and [len(written[s]) for s in ("training", "validation", "test")] == [6, 2, 3]
    assert (tmp_path / "bundle" / "models" / "model.pt").is_file()


def test_isic_2016_has_no_validation_set_but_a_seeded_share(tmp_path, pictures, monkeypatch):
    server = _isic_server(tmp_path / "server", pictures, 2016, {"training": 10, "test": 2})
    monkeypatch.setattr(ISICDataset, "base_url", server.as_uri() + "/{year}/")
    monkeypatch.setattr(ISICDataset, "num_images", {**ISICDataset.num_images, 2016: {"training": 10, "test": 2}})
    (tmp_path / "data").mkdir()
    with pytest.raises(ValueError, match="no validation set: pass val_frac"):
        ISICDataset(tmp_path / "data", year=2016, section="validation", download=True)
    with pytest.raises(ValueError, match="has its own validation set"):
        ISICDataset(tmp_path / "data", year=2017, section="training", val_frac=0.3)
    common = {"year": 2016, "download": True, "val_frac": 0.3, "seed": 3, "progress": False}
    validation = ISICDataset(tmp_path / "data", section="validation", **common)
    train = ISICDataset(tmp_path / "data", section="training", **common)
    test = ISICDataset(tmp_path / "data", section="test", download=True, year=2016, progress=False)
    assert (len(train), len(validation), len(test)) == (7, 3, 2)
    assert not {it["image"] for it in train.data} & {it["image"] for it in validation.data}
    bundle = prepare_datalists(train.dataset_dir, val_fraction=0.3, seed=3)  # --val_fraction 0.3 --seed 3
    assert bundle["validation"] == validation.data and bundle["training"] == train.data and bundle["test"] == test.data


def test_isic_2017_superpixels_are_not_images(tmp_path, pictures, monkeypatch):
    server = _isic_server(tmp_path / "server", pictures, 2017, {"test": 3})
    monkeypatch.setattr(ISICDataset, "base_url", server.as_uri() + "/{year}/")
    monkeypatch.setattr(ISICDataset, "num_images", {**ISICDataset.num_images, 2017: {"test": 3}})
    (tmp_path / "data").mkdir()
    test = ISICDataset(tmp_path / "data", year=2017, section="test", download=True, progress=False, cache_rate=0.0)
    assert sorted(Path(it["image"]).name for it in test.data) == [f"ISIC_{k:07d}.jpg" for k in range(3)]


def test_truncated_or_corrupt_archive_leaves_nothing_extracted(isic):
    server, root = isic
    images_zip = ISICDataset.resources[2018]["training"][0]
    data = (server / "2018" / images_zip).read_bytes()
    (root / images_zip).write_bytes(data[: len(data) // 2])  # an interrupted download, kept under the final name
    with pytest.raises(DatasetError, match=f"{images_zip} is truncated or corrupt") as err:
        ISICDataset(root, year=2018, section="training")
    assert "download it again" in str(err.value)
    assert _leftovers(root / "ISIC2018") == []

    # complete but one member damaged: its CRC-32 fails while it is extracted, after others were written
    with zipfile.ZipFile(server / "2018" / images_zip) as zf:
        info = zf.getinfo("ISIC2018_Task1-2_Training_Input/ISIC_0000003.jpg")
    start = info.header_offset + 30 + len(info.filename) + len(info.extra) + info.compress_size // 2
    damaged = bytearray(data)
    damaged[start : start + 8] = bytes(255 - b for b in damaged[start : start + 8])
    (root / images_zip).write_bytes(bytes(damaged))
    with pytest.raises(DatasetError, match="truncated or corrupt"):
        ISICDataset(root, year=2018, section="training")
    assert _leftovers(root / "ISIC2018") == []

    # the archive downloaded again is extracted
    (root / images_zip).unlink()
    assert len(ISICDataset(root, year=2018, section="training", download=True, progress=False)) == 6


def test_wrong_checksum_keeps_and_extracts_nothing(isic):
    server, root = isic
    images_zip, truth_zip = ISICDataset.resources[2018]["test"]
    md5 = hashlib.md5((server / "2018" / images_zip).read_bytes()).hexdigest()
    wrong = {images_zip: "md5:" + "0" * 32}
    with pytest.raises(DatasetError, match=f"{images_zip} downloaded from the challenge fails its md5 check"):
        ISICDataset(root, year=2018, section="test", download=True, hash_vals=wrong, progress=False)
    assert not (root / images_zip).exists() and _leftovers(root / "ISIC2018") == []

    shutil.copy(server / "2018" / images_zip, root / images_zip)  # an archive already there, another checksum
    with pytest.raises(DatasetError, match="fails its md5 check"):
        ISICDataset(root, year=2018, section="test", hash_vals=wrong)
    assert _leftovers(root / "ISIC2018") == []
    sha = hashlib.sha256((server / "2018" / truth_zip).read_bytes()).hexdigest()
    right = {images_zip: f"md5:{md5}", truth_zip: f"sha256:{sha}"}
    assert len(ISICDataset(root, year=2018, section="test", download=True, hash_vals=right, progress=False)) == 3


def test_missing_archive_or_images_are_named(isic, tmp_path, pictures):
    server, root = isic
    with pytest.raises(RuntimeError, match="use download=True") as err:
        ISICDataset(root, year=2018, section="validation")
    assert "ISIC2018_Task1-2_Validation_Input.zip" in str(err.value)
    # an archive with an image fewer than the challenge published is refused, nothing left of it
    _isic_server(tmp_path / "short", pictures, 2018, {"validation": 1})
    images_zip = ISICDataset.resources[2018]["validation"][0]
    shutil.copy(tmp_path / "short" / "2018" / images_zip, root / images_zip)
    with pytest.raises(DatasetError, match="holds 1 images where 2 were published"):
        ISICDataset(root, year=2018, section="validation")
    assert _leftovers(root / "ISIC2018") == []
    with pytest.raises(ValueError, match="year must be one of"):
        ISICDataset(root, year=2019)
    with pytest.raises(ValueError, match="section must be one of"):
        ISICDataset(root, section="train")
    with pytest.raises(ValueError, match="must be 'md5:<hex>'"):
        ISICDataset(root, section="validation", hash_vals={images_zip: "0" * 32})


def _ph2_archive(path: Path, cases: dict[str, tuple[Image.Image, Image.Image]]) -> Path:
    """PH2's archive layout: PH2Dataset/PH2 Dataset images/IMDxxx/IMDxxx_Dermoscopic_Image/IMDxxx.bmp, the mask in
    IMDxxx_lesion/IMDxxx_lesion.bmp, and the clinical table beside the images."""
    members: dict = {"PH2Dataset/PH2_dataset.txt": "|| Name || Histological Diagnosis ||"}
    for case, (image, mask) in cases.items():
        folder = f"PH2Dataset/PH2 Dataset images/{case}"
        members[f"{folder}/{case}_Dermoscopic_Image/{case}.bmp"] = image
        members[f"{folder}/{case}_lesion/{case}_lesion.bmp"] = mask
    return _zip(path, members)


def test_ph2_from_the_archive_with_the_project_split(tmp_path, monkeypatch):
    """Real PH2 photos and masks, packed as PH2's authors pack them, read with the project's split file."""
    ph2, split_file = require(PH2_DIR), require(PH2_SPLIT)
    split = json.loads(split_file.read_text())
    train_ids, test_ids = split["train"][:3], split["test"][:2]
    cases = {i: (Image.open(ph2 / "images" / f"{i}.jpg").convert("RGB"), Image.open(ph2 / "masks" / f"{i}_lesion.png"))
             for i in train_ids + test_ids}
    archive = _ph2_archive(tmp_path / "downloads" / "PH2Dataset.zip", cases)
    small_split = tmp_path / "split.json"
    small_split.write_text(json.dumps({"train": train_ids, "test": test_ids}))
    monkeypatch.setattr(PH2Dataset, "num_images", len(cases))
    (tmp_path / "data").mkdir()

    with pytest.raises(RuntimeError, match="registration"):
        PH2Dataset(tmp_path / "data")
    test = PH2Dataset(tmp_path / "data", section="test", archive=archive, split_file=small_split, progress=False)
    assert sorted(Path(it["image"]).stem for it in test.data) == sorted(test_ids)
    item = test[0]
    assert tuple(item["image"].shape[:2]) == Image.open(item["image"].meta["filename_or_obj"]).size  # MONAI's (W, H)
    assert set(np.unique(np.asarray(item["label"]))) <= {0, 255}
    validation = PH2Dataset(tmp_path / "data", section="validation", split_file=small_split, val_frac=0.34,
                            progress=False)  # extracted before: no archive needed
    train = PH2Dataset(tmp_path / "data", section="training", split_file=small_split, val_frac=0.34, progress=False)
    assert (len(train), len(validation)) == (2, 1)
    assert sorted(Path(it["image"]).stem for it in train.data + validation.data) == sorted(train_ids)
    assert test.dataset_dir == tmp_path / "data" / "PH2Dataset"
    lists = prepare_datalists(test.dataset_dir, split_file=small_split, val_fraction=0.34)  # the bundle's reading
    assert lists["test"] == test.data and lists["validation"] == validation.data
    with pytest.raises(ValueError, match="no official test set"):
        PH2Dataset(tmp_path / "data", section="test")


def test_ph2_rar_archive_needs_a_program_to_unpack_it(tmp_path, pictures, monkeypatch):
    cases = {f"IMD{i:03d}": pictures[i] for i in range(3)}
    rar = tmp_path / "PH2Dataset.rar"
    _ph2_archive(tmp_path / "PH2Dataset.zip", cases).rename(rar)
    monkeypatch.setattr(PH2Dataset, "num_images", 3)
    (tmp_path / "data").mkdir()
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(DatasetError, match="RAR archive, which Python cannot unpack"):
        PH2Dataset(tmp_path / "data", archive=rar)
    assert _leftovers(tmp_path / "data") == []
    monkeypatch.setattr(shutil, "which", real_which)
    if not shutil.which("bsdtar"):
        pytest.skip("bsdtar (libarchive-tools) is not installed: the unpacking itself is not exercised")
    # bsdtar reads archives by their content, so the zip stands in for the RAR here
    monkeypatch.setattr("monai_egeunet.apps.datasets.RAR_TOOLS", {"bsdtar": ["bsdtar", "-x", "-f"]})
    ds = PH2Dataset(tmp_path / "data", archive=rar, progress=False)
    assert sorted(Path(it["image"]).stem for it in ds.data) == sorted(cases)


def test_extract_archive_refuses_to_overwrite_and_unpacks_tar(tmp_path, pictures):
    import tarfile

    folder = tmp_path / "content" / "PH2Dataset"
    (folder / "IMD001" / "IMD001_Dermoscopic_Image").mkdir(parents=True)
    pictures[0][0].save(folder / "IMD001" / "IMD001_Dermoscopic_Image" / "IMD001.bmp")
    with tarfile.open(tmp_path / "ph2.tar.gz", "w:gz") as tf:
        tf.add(folder, arcname="PH2Dataset")
    target = extract_archive(tmp_path / "ph2.tar.gz", tmp_path / "out" / "PH2")
    assert (target / "IMD001" / "IMD001_Dermoscopic_Image" / "IMD001.bmp").is_file()
    with pytest.raises(FileExistsError):
        extract_archive(tmp_path / "ph2.tar.gz", target)
    data = (tmp_path / "ph2.tar.gz").read_bytes()
    (tmp_path / "cut.tar.gz").write_bytes(data[: len(data) - 200])
    with pytest.raises(DatasetError, match="truncated or corrupt"):
        extract_archive(tmp_path / "cut.tar.gz", tmp_path / "out" / "cut")
    assert _leftovers(tmp_path / "out") == ["PH2"]
