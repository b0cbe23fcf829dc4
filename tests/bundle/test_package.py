"""The distributable bundle: assembled from the repository, unpacked elsewhere, its inference run there."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from monai.bundle import ConfigWorkflow
from PIL import Image

from monai_egeunet.bundle_tools import BUNDLE_NAME, PackageError, main, package
from tests.bundle.conftest import lesion_image
from tests.utils import REPO_ROOT


def test_package_unpack_and_run_inference(tmp_path, checkpoint, monkeypatch):
    zip_path = package(REPO_ROOT, output_dir=tmp_path / "dist", weights=checkpoint)
    version = json.loads((REPO_ROOT / "configs" / "metadata.json").read_text())["version"]
    assert zip_path == tmp_path / "dist" / f"{BUNDLE_NAME}_v{version}.zip"
    assert (tmp_path / "dist" / BUNDLE_NAME / "models" / "model.pt").read_bytes() == checkpoint.read_bytes()

    unpacked = tmp_path / "unpacked"  # outside the repository, like a user's download folder
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(unpacked)
    bundle = unpacked / BUNDLE_NAME
    files = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()}
    expected = {"LICENSE", "models/model.pt", "docs/README.md", "docs/data_license.txt", "configs/metadata.json",
                "configs/inference.json", "configs/train.json", "configs/evaluate.json", "configs/multi_gpu_train.json"}
    assert expected <= files, expected - files
    assert "Apache License" in (bundle / "LICENSE").read_text()

    (tmp_path / "in").mkdir()
    sizes = {"a.png": (130, 90), "b.jpg": (70, 110)}  # PIL's (width, height)
    for i, (name, (w, h)) in enumerate(sizes.items()):
        Image.fromarray(lesion_image(h, w, seed=i)).save(tmp_path / "in" / name)
    # run from the bundle folder with its defaults (bundle_root ".", ckpt_path models/model.pt), as a user would
    monkeypatch.chdir(bundle)
    wf = ConfigWorkflow(
        config_file="configs/inference.json",
        meta_file="configs/metadata.json",
        logging_file=False,
        workflow_type="infer",
        dataset_dir=str(tmp_path / "in"),
        output_dir=str(tmp_path / "out"),
        num_workers=0,
    )
    wf.initialize()
    assert not wf.check_properties()
    assert wf.parser.get_parsed_content("ckpt_path") == "./models/model.pt"
    wf.run()
    wf.finalize()
    for name, size in sizes.items():
        with Image.open(tmp_path / "out" / f"{name.split('.')[0]}_seg.png") as m:
            assert m.size == size and m.mode == "L"
            assert set(np.unique(np.asarray(m))) <= {0, 255}


def test_package_again_replaces_the_previous_build(tmp_path, checkpoint):
    package(REPO_ROOT, output_dir=tmp_path, weights=checkpoint)
    (tmp_path / BUNDLE_NAME / "stale.txt").write_text("from an older build")
    package(REPO_ROOT, output_dir=tmp_path, weights=checkpoint)
    assert not (tmp_path / BUNDLE_NAME / "stale.txt").exists()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / BUNDLE_NAME).mkdir()
    with pytest.raises(PackageError, match="not a bundle built before"):
        package(REPO_ROOT, output_dir=tmp_path / "other", weights=checkpoint)


def test_missing_or_wrong_weights_fail_clearly(tmp_path, capsys):
    assert main(["package", "--repo_root", str(REPO_ROOT), "--output_dir", str(tmp_path),
                 "--weights", str(tmp_path / "none.pt")]) == 1
    err = capsys.readouterr().err
    assert "no weights at" in err and "--weights" in err
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(PackageError, match="cannot be shipped"):
        package(REPO_ROOT, output_dir=tmp_path, weights=tmp_path / "bad.pt")
    assert not (tmp_path / BUNDLE_NAME).exists()
