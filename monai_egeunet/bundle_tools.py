"""Assembling the distributable MONAI Bundle from the repository.

    python -m monai_egeunet.bundle_tools package [--weights PATH] [--output_dir dist] [--repo_root .]

writes ``dist/egeunet_skin_lesion/`` (the bundle folder) and ``dist/egeunet_skin_lesion_v<version>.zip`` (the same
folder zipped, the layout ``monai.bundle.download``/``load`` unpack), the version taken from
``configs/metadata.json``. The bundle holds::

    configs/          every file of the repository's configs/ (metadata, inference, training, evaluation, multi-GPU)
    models/model.pt   the shipped weights (default: the repository's bundle/models/model.pt)
    docs/             bundle/docs/: the model card (README.md) and the data licences
    LICENSE           bundle/LICENSE (Apache-2.0)

The bundle's configs import ``monai_egeunet``, so it runs where this package is installed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import zipfile
from pathlib import Path

from monai_egeunet.networks import EGEUNet, load_weights

__all__ = ["BUNDLE_NAME", "PackageError", "package"]

BUNDLE_NAME = "egeunet_skin_lesion"
#: the files a bundle cannot work or be shared without, relative to the repository root
_REQUIRED = ("configs/metadata.json", "configs/inference.json", "bundle/docs/README.md", "bundle/LICENSE")
#: written by a previous build; a folder without it is not removed
_BUILD_MARKER = "configs/metadata.json"


class PackageError(RuntimeError):
    """The bundle cannot be assembled; the message says which file is missing or wrong."""


def _zip_folder(folder: Path, zip_path: Path) -> None:
    tmp = zip_path.with_name(f".{zip_path.name}.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, arcname=f"{folder.name}/{path.relative_to(folder).as_posix()}")
    os.replace(tmp, zip_path)


def package(
    repo_root: str | os.PathLike = ".",
    output_dir: str | os.PathLike | None = None,
    weights: str | os.PathLike | None = None,
    name: str = BUNDLE_NAME,
) -> Path:
    """Assembles the bundle folder ``output_dir/name`` and its zip ``output_dir/name_v<version>.zip``.

    Args:
        repo_root: the repository root (holding ``configs/`` and ``bundle/``).
        output_dir: where to write; default ``repo_root/dist``.
        weights: the weights to ship; default ``repo_root/bundle/models/model.pt``. They must load into the
            bundle's network (checked).
        name: the bundle's folder name.

    Returns:
        The zip file's path.

    Raises:
        PackageError: when the weights or a required file are missing, the weights do not fit the network, or
            ``output_dir/name`` exists but is not a previous build.

    Example::

        >>> package(".", weights="runs/ph2/models/model.pt")  # doctest: +SKIP
        PosixPath('dist/egeunet_skin_lesion_v0.2.0.zip')
    """
    root = Path(repo_root).resolve()
    weights_path = Path(weights) if weights is not None else root / "bundle" / "models" / "model.pt"
    if not weights_path.is_file():
        raise PackageError(
            f"no weights at {weights_path}: the bundle ships trained weights. Put the best model.pt of a training "
            f"run there (e.g. cp runs/ph2/models/model.pt bundle/models/model.pt) or pass --weights PATH"
        )
    try:
        load_weights(EGEUNet(), weights_path)
    except (ValueError, FileNotFoundError) as e:
        raise PackageError(f"the weights {weights_path} cannot be shipped: {e}") from e
    missing = [r for r in _REQUIRED if not (root / r).is_file()]
    if missing:
        raise PackageError(f"{root} is missing {', '.join(missing)}: run this from the repository root")
    try:
        version = json.loads((root / "configs" / "metadata.json").read_text())["version"]
    except (json.JSONDecodeError, KeyError) as e:
        raise PackageError(f"configs/metadata.json has no readable 'version': {e}") from e

    out = Path(output_dir) if output_dir is not None else root / "dist"
    target = out / name
    if target.exists():
        if not (target / _BUILD_MARKER).is_file():
            raise PackageError(f"{target} exists and is not a bundle built before: move it away first")
        shutil.rmtree(target)
    (target / "models").mkdir(parents=True)
    shutil.copytree(root / "configs", target / "configs", ignore=shutil.ignore_patterns(".*", "__pycache__"))
    shutil.copy2(weights_path, target / "models" / "model.pt")
    shutil.copytree(root / "bundle" / "docs", target / "docs", ignore=shutil.ignore_patterns(".*"))
    shutil.copy2(root / "bundle" / "LICENSE", target / "LICENSE")
    zip_path = out / f"{name}_v{version}.zip"
    _zip_folder(target, zip_path)
    return zip_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m monai_egeunet.bundle_tools", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("package", help="assemble dist/egeunet_skin_lesion/ and its versioned zip")
    p.add_argument("--repo_root", default=".", help="the repository root (default: .)")
    p.add_argument("--output_dir", default=None, help="where to write (default: REPO_ROOT/dist)")
    p.add_argument("--weights", default=None, help="weights to ship (default: REPO_ROOT/bundle/models/model.pt)")
    args = parser.parse_args(argv)
    try:
        zip_path = package(args.repo_root, args.output_dir, args.weights)
    except PackageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"bundle folder: {zip_path.parent / BUNDLE_NAME}\nbundle zip:    {zip_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
