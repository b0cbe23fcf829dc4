"""Assembling the distributable MONAI Bundle from the repository, and publishing it on the Hugging Face Hub.

    python -m monai_egeunet.bundle_tools package [--weights PATH] [--output_dir dist] [--repo_root .] [--hf_repo ID]
    python -m monai_egeunet.bundle_tools publish --repo OWNER/NAME [--weights PATH] [--public] [--token TOKEN]

``package`` writes ``dist/egeunet_skin_lesion/`` (the bundle folder) and ``dist/egeunet_skin_lesion_v<version>.zip``
(the same folder zipped, the layout ``monai.bundle.download``/``load`` unpack), the version taken from
``configs/metadata.json``. The bundle holds::

    configs/          every file of the repository's configs/ (metadata, inference, training, evaluation, multi-GPU,
                      the MLflow tracking settings)
    models/model.pt   the shipped weights (default: the repository's bundle/models/model.pt)
    docs/             bundle/docs/: the model card (README.md, without its front matter) and the data licences
    README.md         the model card with its Hugging Face front matter (license, library_name, tags): the
                      repository card the Hub shows
    large_files.yml   the weights' path and SHA-256 (and, with --hf_repo, the Hub URL that
                      ``monai.bundle download_large_files`` fetches them from)
    LICENSE           bundle/LICENSE (Apache-2.0)

``publish`` packages with the Hub URL and uploads the folder to the Hub as one commit, tagged with the version and
``latest_version`` (what ``monai.bundle download(..., source="huggingface_hub", repo=...)`` fetches when no version
is given). It does what ``monai.bundle push_to_hf_hub`` does except rewriting the card: that one copies
``docs/README.md`` over ``README.md`` and puts MONAI's minimal front matter above it, which would drop this card's
tags; ``push_to_hf_hub`` still works on the package (its card then has MONAI's front matter).

The bundle's configs import ``monai_egeunet``, so it runs where this package is installed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import zipfile
from pathlib import Path

import yaml
from monai.utils import optional_import

from monai_egeunet.networks import EGEUNet, load_weights
from monai_egeunet.provenance import file_sha256, provenance_path

__all__ = ["BUNDLE_NAME", "PackageError", "package", "publish", "split_front_matter"]

BUNDLE_NAME = "egeunet_skin_lesion"
#: the files a bundle cannot work or be shared without, relative to the repository root
_REQUIRED = ("configs/metadata.json", "configs/inference.json", "bundle/docs/README.md", "bundle/LICENSE")
#: written by a previous build; a folder without it is not removed
_BUILD_MARKER = "configs/metadata.json"
#: front matter the Hub needs to file the card under MONAI (``library_name``) and show its licence
_CARD_REQUIRED = {"library_name": "monai", "license": "apache-2.0"}
_LATEST = "latest_version"  # the tag monai.bundle.download picks when no version is given
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")


class PackageError(RuntimeError):
    """The bundle cannot be assembled or published; the message says which file, value or step is wrong."""


def split_front_matter(text: str, source: str = "model card") -> tuple[dict, str]:
    """Splits a Markdown model card into its YAML front matter (the Hugging Face card metadata) and its body.

    Args:
        text: the card.
        source: what to call the card in an error message.

    Returns:
        The front matter as a dict (empty when the card has none) and the text after it.

    Raises:
        PackageError: when a front matter block is opened but not closed, or is not a YAML mapping.

    Example::

        >>> split_front_matter("---\\nlicense: mit\\n---\\n# Card\\n")
        ({'license': 'mit'}, '# Card\\n')
    """
    if not text.startswith("---\n"):
        return {}, text
    end = text.find("\n---\n", 3)
    if end < 0:
        raise PackageError(f"{source}: the front matter opened by its first '---' line is never closed")
    try:
        meta = yaml.safe_load(text[4:end]) or {}
    except yaml.YAMLError as e:
        raise PackageError(f"{source}: the front matter is not valid YAML: {e}") from e
    if not isinstance(meta, dict):
        raise PackageError(f"{source}: the front matter must be a YAML mapping, got {type(meta).__name__}")
    return meta, text[end + 5 :].lstrip("\n")


def _card(root: Path) -> tuple[dict, str]:
    """The model card's front matter, checked against what the Hub and MONAI's hub tools expect, and its body."""
    card = root / "bundle" / "docs" / "README.md"
    meta, body = split_front_matter(card.read_text(), str(card))
    wrong = {k: meta.get(k) for k, v in _CARD_REQUIRED.items() if meta.get(k) != v}
    if wrong:
        raise PackageError(
            f"{card}: its front matter must say {', '.join(f'{k}: {v}' for k, v in _CARD_REQUIRED.items())} "
            f"(found {wrong})"
        )
    tags = meta.get("tags")
    if not isinstance(tags, list) or "monai" not in tags:
        raise PackageError(f"{card}: the front matter's tags must be a list that includes 'monai' (found {tags!r})")
    return meta, body


def _hub_url(repo: str, revision: str, path: str) -> str:
    return f"https://huggingface.co/{repo}/resolve/{revision}/{path}"


def _zip_folder(folder: Path, zip_path: Path) -> None:
    tmp = zip_path.with_name(f".{zip_path.name}.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, arcname=f"{folder.name}/{path.relative_to(folder).as_posix()}")
    os.replace(tmp, zip_path)


def _check_repo_id(repo: str) -> None:
    if not _REPO_ID.fullmatch(repo or ""):
        raise PackageError(f"Hugging Face repository id {repo!r} must be OWNER/NAME, e.g. my-lab/{BUNDLE_NAME}")


def package(
    repo_root: str | os.PathLike = ".",
    output_dir: str | os.PathLike | None = None,
    weights: str | os.PathLike | None = None,
    name: str = BUNDLE_NAME,
    hf_repo: str | None = None,
) -> Path:
    """Assembles the bundle folder ``output_dir/name`` and its zip ``output_dir/name_v<version>.zip``.

    Args:
        repo_root: the repository root (holding ``configs/`` and ``bundle/``).
        output_dir: where to write; default ``repo_root/dist``.
        weights: the weights to ship; default ``repo_root/bundle/models/model.pt``. They must load into the
            bundle's network (checked).
        name: the bundle's folder name.
        hf_repo: the Hugging Face repository (``OWNER/NAME``) the bundle will be published to: ``large_files.yml``
            then also gives the weights' URL there, at the version's tag.

    Returns:
        The zip file's path.

    Raises:
        PackageError: when the weights or a required file are missing, the weights do not fit the network, the
            model card's front matter lacks what the Hub needs, ``hf_repo`` is not ``OWNER/NAME``, or
            ``output_dir/name`` exists but is not a previous build.

    Example::

        >>> package(".", weights="runs/ph2/models/model.pt")  # doctest: +SKIP
        PosixPath('dist/egeunet_skin_lesion_v0.4.4.zip')
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
    if hf_repo is not None:
        _check_repo_id(hf_repo)
    card_meta, card_body = _card(root)

    out = Path(output_dir) if output_dir is not None else root / "dist"
    target = out / name
    if target.exists():
        if not (target / _BUILD_MARKER).is_file():
            raise PackageError(f"{target} exists and is not a bundle built before: move it away first")
        shutil.rmtree(target)
    (target / "models").mkdir(parents=True)
    shutil.copytree(root / "configs", target / "configs", ignore=shutil.ignore_patterns(".*", "__pycache__"))
    shutil.copy2(weights_path, target / "models" / "model.pt")
    if provenance_path(weights_path).is_file():  # what the weights were trained on travels with them
        shutil.copy2(provenance_path(weights_path), provenance_path(target / "models" / "model.pt"))
    shutil.copytree(root / "bundle" / "docs", target / "docs", ignore=shutil.ignore_patterns(".*"))
    shutil.copy2(root / "bundle" / "LICENSE", target / "LICENSE")
    # docs/README.md is the MONAI bundle's card; README.md is the same card as the Hub reads it, front matter first
    (target / "docs" / "README.md").write_text(card_body)
    front = yaml.safe_dump(card_meta, sort_keys=False, allow_unicode=True)
    (target / "README.md").write_text(f"---\n{front}---\n\n{card_body}")
    entry = {"path": "models/model.pt"}
    if hf_repo is not None:
        entry["url"] = _hub_url(hf_repo, version, "models/model.pt")
    entry.update(hash_val=file_sha256(target / "models" / "model.pt"), hash_type="sha256")
    (target / "large_files.yml").write_text(yaml.safe_dump({"large_files": [entry]}, sort_keys=False))
    zip_path = out / f"{name}_v{version}.zip"
    _zip_folder(target, zip_path)
    return zip_path


def publish(
    repo: str,
    repo_root: str | os.PathLike = ".",
    output_dir: str | os.PathLike | None = None,
    weights: str | os.PathLike | None = None,
    token: str | None = None,
    private: bool = True,
    name: str = BUNDLE_NAME,
) -> str:
    """Packages the bundle for the Hugging Face repository ``repo`` and uploads it as one commit tagged with the
    bundle's version and ``latest_version``.

    The repository is created when it does not exist (private unless ``private=False``). A version that is already
    tagged there is refused before anything is uploaded: bump ``version`` in ``configs/metadata.json`` first.

    Args:
        repo: the Hub repository, ``OWNER/NAME``.
        repo_root: the repository root (see :func:`package`).
        output_dir: where the package is built; default ``repo_root/dist``.
        weights: the weights to ship (see :func:`package`).
        token: a Hub token with write access; default the one ``hf auth login`` stored or ``$HF_TOKEN``.
        private: create the repository private (an existing repository keeps its visibility).
        name: the bundle's name, the folder ``monai.bundle.download(name=...)`` unpacks into.

    Returns:
        The URL of the upload commit.

    Raises:
        PackageError: when ``huggingface_hub`` is not installed, ``repo`` is not ``OWNER/NAME``, the version is
            already published, or packaging fails (see :func:`package`).

    Example::

        >>> publish("my-lab/egeunet_skin_lesion", private=False)  # doctest: +SKIP
        'https://huggingface.co/my-lab/egeunet_skin_lesion/commit/...'
    """
    hub, has_hub = optional_import("huggingface_hub")
    if not has_hub:
        raise PackageError("publishing needs huggingface_hub: pip install 'monai-egeunet[hub]'")
    _check_repo_id(repo)
    zip_path = package(repo_root, output_dir, weights, name=name, hf_repo=repo)
    folder = zip_path.parent / name
    version = json.loads((folder / "configs" / "metadata.json").read_text())["version"]

    api = hub.HfApi(token=token)
    api.create_repo(repo_id=repo, private=private, exist_ok=True)
    tags = {t.name for t in api.list_repo_refs(repo_id=repo).tags}
    if version in tags:
        raise PackageError(
            f"version {version} is already published in {repo}: bump 'version' (and the changelog) in "
            f"configs/metadata.json to publish these weights"
        )
    commit = api.upload_folder(repo_id=repo, folder_path=str(folder), commit_message=f"{name} v{version}")
    api.create_tag(repo_id=repo, tag=version, revision=commit.oid)
    if _LATEST in tags:  # a tag does not move by itself: re-point latest_version at this commit
        api.delete_tag(repo_id=repo, tag=_LATEST)
    api.create_tag(repo_id=repo, tag=_LATEST, revision=commit.oid)
    return str(commit.commit_url)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m monai_egeunet.bundle_tools", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("package", help="assemble dist/egeunet_skin_lesion/ and its versioned zip")
    p.add_argument("--repo_root", default=".", help="the repository root (default: .)")
    p.add_argument("--output_dir", default=None, help="where to write (default: REPO_ROOT/dist)")
    p.add_argument("--weights", default=None, help="weights to ship (default: REPO_ROOT/bundle/models/model.pt)")
    p.add_argument("--hf_repo", default=None, help="Hugging Face repository OWNER/NAME the weights' URL points to")
    q = sub.add_parser("publish", help="package and upload the bundle to a Hugging Face repository")
    q.add_argument("--repo", required=True, help="the Hugging Face repository, OWNER/NAME")
    q.add_argument("--repo_root", default=".", help="the repository root (default: .)")
    q.add_argument("--output_dir", default=None, help="where to build the package (default: REPO_ROOT/dist)")
    q.add_argument("--weights", default=None, help="weights to ship (default: REPO_ROOT/bundle/models/model.pt)")
    q.add_argument("--token", default=None, help="Hub token with write access (default: the stored login)")
    q.add_argument("--public", action="store_true", help="create the repository public (default: private)")
    args = parser.parse_args(argv)
    try:
        if args.command == "package":
            zip_path = package(args.repo_root, args.output_dir, args.weights, hf_repo=args.hf_repo)
            print(f"bundle folder: {zip_path.parent / BUNDLE_NAME}\nbundle zip:    {zip_path}")
        else:
            url = publish(args.repo, args.repo_root, args.output_dir, args.weights, args.token, not args.public)
            print(f"published {args.repo}: {url}")
    except PackageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
