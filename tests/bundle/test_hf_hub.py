"""Sharing the bundle on the Hugging Face Hub: publishing it, and MONAI's own download and push functions, run
against a local folder standing in for the Hub (no network here); a downloaded bundle runs inference outside the
repository."""

from __future__ import annotations

import hashlib
import json
import shutil
import urllib.parse
import uuid
from pathlib import Path

import numpy as np
import pytest
import yaml
from monai.bundle import ConfigWorkflow
from PIL import Image

from monai_egeunet.bundle_tools import BUNDLE_NAME, PackageError, main, package, publish, split_front_matter
from tests.bundle.conftest import lesion_image
from tests.utils import REPO_ROOT

hub = pytest.importorskip("huggingface_hub", reason="Hub sharing needs the 'hub' extra (huggingface_hub)")
from huggingface_hub.hf_api import CommitInfo, GitRefInfo, GitRefs, RepoUrl  # noqa: E402

import monai.apps.utils  # noqa: E402
import monai.bundle  # noqa: E402

REPO = "skin-lab/egeunet_skin_lesion"
VERSION = json.loads((REPO_ROOT / "configs" / "metadata.json").read_text())["version"]


class LocalHub:
    """A folder standing in for the Hub's git-backed repositories: every upload is a commit holding the full file
    tree (the previous one updated with the uploaded files, as ``upload_folder`` does), tags name commits, and
    downloads copy a commit's tree. It answers the calls ``huggingface_hub`` makes on behalf of
    ``monai.bundle`` and ``bundle_tools.publish``, returning the library's own result types."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.calls: list[str] = []

    def _repo(self, repo_id: str) -> Path:
        path = self.root / repo_id.replace("/", "--")
        if not path.is_dir():
            raise hub.errors.RepositoryNotFoundError(f"{repo_id} not found")
        return path

    def _refs(self, repo_id: str) -> dict:
        return json.loads((self._repo(repo_id) / "refs.json").read_text())

    def _set_refs(self, repo_id: str, refs: dict) -> None:
        (self._repo(repo_id) / "refs.json").write_text(json.dumps(refs))

    def tree(self, repo_id: str, revision: str | None = None) -> Path:
        refs = self._refs(repo_id)
        revision = revision or "main"
        oid = refs["tags"].get(revision) or refs["branches"].get(revision) or revision
        tree = self._repo(repo_id) / "commits" / oid
        if not tree.is_dir():
            raise hub.errors.RevisionNotFoundError(f"{repo_id} has no revision {revision}")
        return tree

    # HfApi
    def create_repo(self, repo_id: str, private: bool | None = None, exist_ok: bool = False, **_) -> RepoUrl:
        self.calls.append("create_repo")
        path = self.root / repo_id.replace("/", "--")
        if path.exists() and not exist_ok:
            raise FileExistsError(repo_id)
        if not path.exists():
            (path / "commits").mkdir(parents=True)
            (path / "refs.json").write_text(json.dumps({"branches": {}, "tags": {}, "private": private}))
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def upload_folder(self, repo_id: str, folder_path: str, commit_message: str = "", **_) -> CommitInfo:
        self.calls.append("upload_folder")
        refs = self._refs(repo_id)
        oid = uuid.uuid4().hex
        tree = self._repo(repo_id) / "commits" / oid
        if "main" in refs["branches"]:
            shutil.copytree(self.tree(repo_id, "main"), tree)
        shutil.copytree(folder_path, tree, dirs_exist_ok=True)
        refs["branches"]["main"] = oid
        self._set_refs(repo_id, refs)
        return CommitInfo(commit_url=f"https://huggingface.co/{repo_id}/commit/{oid}", commit_message=commit_message,
                          commit_description="", oid=oid)

    def create_tag(self, repo_id: str, tag: str, revision: str | None = None, exist_ok: bool = False, **_) -> None:
        self.calls.append(f"create_tag {tag}")
        refs = self._refs(repo_id)
        if tag in refs["tags"]:
            if exist_ok:
                return
            raise hub.errors.HfHubHTTPError(f"tag {tag} already exists")
        refs["tags"][tag] = self.tree(repo_id, revision).name
        self._set_refs(repo_id, refs)

    def delete_tag(self, repo_id: str, tag: str, **_) -> None:
        self.calls.append(f"delete_tag {tag}")
        refs = self._refs(repo_id)
        if refs["tags"].pop(tag, None) is None:
            raise hub.errors.RevisionNotFoundError(f"{repo_id} has no tag {tag}")
        self._set_refs(repo_id, refs)

    def list_repo_refs(self, repo_id: str, **_) -> GitRefs:
        refs = self._refs(repo_id)
        return GitRefs(
            branches=[GitRefInfo(name=n, ref=f"refs/heads/{n}", target_commit=o) for n, o in refs["branches"].items()],
            converts=[],
            tags=[GitRefInfo(name=n, ref=f"refs/tags/{n}", target_commit=o) for n, o in refs["tags"].items()],
        )

    # module-level functions
    def snapshot_download(self, repo_id: str, revision: str | None = None, local_dir: str | None = None, **_) -> str:
        self.calls.append(f"snapshot_download {revision}")
        shutil.copytree(self.tree(repo_id, revision), local_dir, dirs_exist_ok=True)
        return str(local_dir)

    def urlretrieve(self, url: str, filename, reporthook=None):
        """``https://huggingface.co/OWNER/NAME/resolve/REVISION/PATH``, the file URL of a repository file."""
        parts = urllib.parse.urlparse(url)
        owner, name, resolve, revision, path = parts.path.lstrip("/").split("/", 4)
        assert parts.netloc == "huggingface.co" and resolve == "resolve", url
        self.calls.append(f"urlretrieve {revision}/{path}")
        shutil.copyfile(self.tree(f"{owner}/{name}", revision) / path, filename)
        return str(filename), None


@pytest.fixture
def local_hub(tmp_path, monkeypatch) -> LocalHub:
    stand_in = LocalHub(tmp_path / "hub")
    stand_in.root.mkdir()
    monkeypatch.setattr(hub, "HfApi", lambda token=None, **_: stand_in)
    monkeypatch.setattr(hub, "list_repo_refs", stand_in.list_repo_refs)
    monkeypatch.setattr(hub, "snapshot_download", stand_in.snapshot_download)
    monkeypatch.setattr(monai.apps.utils, "urlretrieve", stand_in.urlretrieve)  # what download_url fetches with
    return stand_in


def test_publish_download_and_run_inference_outside_the_repository(tmp_path, checkpoint, local_hub, monkeypatch):
    url = publish(REPO, REPO_ROOT, output_dir=tmp_path / "dist", weights=checkpoint, private=False)
    assert url.startswith(f"https://huggingface.co/{REPO}/commit/")
    tags = {t.name: t.target_commit for t in local_hub.list_repo_refs(REPO).tags}
    assert set(tags) == {VERSION, "latest_version"} and tags[VERSION] == tags["latest_version"]

    # what the Hub shows: the card with its front matter, and the weights' hash and URL for download_large_files
    published = local_hub.tree(REPO, VERSION)
    meta, body = split_front_matter((published / "README.md").read_text())
    assert meta["library_name"] == "monai" and meta["license"] == "apache-2.0" and "monai" in meta["tags"]
    assert body.startswith("# ") and "---\n" not in body[:10]
    assert (published / "docs" / "README.md").read_text() == body  # the bundle's own card, without front matter
    (large,) = yaml.safe_load((published / "large_files.yml").read_text())["large_files"]
    assert large["path"] == "models/model.pt" and large["hash_type"] == "sha256"
    assert large["hash_val"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert large["url"] == f"https://huggingface.co/{REPO}/resolve/{VERSION}/models/model.pt"

    # MONAI's download, as a user types it: no version, so the `latest_version` tag
    downloads = tmp_path / "downloads"  # outside the repository
    monai.bundle.download(name=BUNDLE_NAME, source="huggingface_hub", repo=REPO, bundle_dir=str(downloads))
    bundle = downloads / BUNDLE_NAME
    assert "snapshot_download latest_version" in local_hub.calls
    assert (bundle / "models" / "model.pt").read_bytes() == checkpoint.read_bytes()
    # a clone of the bundle without its weights gets them from large_files.yml, hash checked by MONAI
    (bundle / "models" / "model.pt").unlink()
    monai.bundle.download_large_files(bundle_path=str(bundle))
    assert f"urlretrieve {VERSION}/models/model.pt" in local_hub.calls
    assert (bundle / "models" / "model.pt").read_bytes() == checkpoint.read_bytes()

    (tmp_path / "in").mkdir()
    Image.fromarray(lesion_image(90, 130)).save(tmp_path / "in" / "lesion.png")
    monkeypatch.chdir(bundle)  # run from the downloaded bundle with its defaults, as a user would
    wf = ConfigWorkflow(config_file="configs/inference.json", meta_file="configs/metadata.json", logging_file=False,
                        workflow_type="infer", dataset_dir=str(tmp_path / "in"), output_dir=str(tmp_path / "out"),
                        num_workers=0)
    wf.initialize()
    assert not wf.check_properties()
    wf.run()
    wf.finalize()
    with Image.open(tmp_path / "out" / "lesion_seg.png") as mask:
        assert mask.size == (130, 90) and set(np.unique(np.asarray(mask))) <= {0, 255}


def test_a_new_version_moves_latest_and_a_published_version_is_refused(tmp_path, checkpoint, local_hub):
    publish(REPO, REPO_ROOT, output_dir=tmp_path / "dist", weights=checkpoint)
    first = {t.name: t.target_commit for t in local_hub.list_repo_refs(REPO).tags}
    uploads = local_hub.calls.count("upload_folder")
    with pytest.raises(PackageError, match=f"version {VERSION} is already published"):
        publish(REPO, REPO_ROOT, output_dir=tmp_path / "dist", weights=checkpoint)
    assert local_hub.calls.count("upload_folder") == uploads  # refused before uploading anything

    root = tmp_path / "repo"  # the repository with its version bumped
    for part in ("configs", "bundle"):
        shutil.copytree(REPO_ROOT / part, root / part, ignore=shutil.ignore_patterns("models"))
    meta = json.loads((root / "configs" / "metadata.json").read_text())
    meta["version"] = "99.0.0"
    (root / "configs" / "metadata.json").write_text(json.dumps(meta))
    publish(REPO, root, output_dir=tmp_path / "dist2", weights=checkpoint)
    tags = {t.name: t.target_commit for t in local_hub.list_repo_refs(REPO).tags}
    assert tags[VERSION] == first[VERSION] and tags["latest_version"] == tags["99.0.0"] != first[VERSION]
    downloads = tmp_path / "downloads"
    monai.bundle.download(name=BUNDLE_NAME, source="huggingface_hub", repo=REPO, bundle_dir=str(downloads),
                          version=VERSION)  # an older version stays downloadable by its tag
    assert json.loads((downloads / BUNDLE_NAME / "configs" / "metadata.json").read_text())["version"] == VERSION


def test_monai_push_to_hf_hub_accepts_the_package(tmp_path, checkpoint, local_hub):
    """MONAI's push_to_hf_hub on the package: its card gets one front matter block (MONAI's), not two."""
    package(REPO_ROOT, output_dir=tmp_path / "dist", weights=checkpoint)
    monai.bundle.push_to_hf_hub(repo=REPO, name=BUNDLE_NAME, bundle_dir=str(tmp_path / "dist"), version=VERSION,
                                tag_as_latest_version=True)
    card = (local_hub.tree(REPO, "latest_version") / "README.md").read_text()
    meta, body = split_front_matter(card)
    assert meta["library_name"] == "monai" and meta["license"] == "apache-2.0"
    assert not body.startswith("---") and body.count("\n---\n") == card.count("\n---\n") - 1
    downloads = tmp_path / "downloads"
    monai.bundle.download(name=BUNDLE_NAME, source="huggingface_hub", repo=REPO, bundle_dir=str(downloads),
                          version=VERSION)
    assert (downloads / BUNDLE_NAME / "models" / "model.pt").read_bytes() == checkpoint.read_bytes()


def test_bad_repository_id_or_card_fail_before_uploading(tmp_path, checkpoint, local_hub, capsys):
    assert main(["publish", "--repo", "no-owner", "--repo_root", str(REPO_ROOT), "--weights", str(checkpoint),
                 "--output_dir", str(tmp_path)]) == 1
    assert "must be OWNER/NAME" in capsys.readouterr().err
    assert local_hub.calls == []

    root = tmp_path / "repo"
    for part in ("configs", "bundle"):
        shutil.copytree(REPO_ROOT / part, root / part, ignore=shutil.ignore_patterns("models"))
    card = root / "bundle" / "docs" / "README.md"
    card.write_text(card.read_text().replace("library_name: monai\n", ""))
    with pytest.raises(PackageError, match="library_name: monai"):
        publish(REPO, root, output_dir=tmp_path / "dist", weights=checkpoint)
    card.write_text("---\nlicense: apache-2.0\n# never closed\n")
    with pytest.raises(PackageError, match="never closed"):
        package(root, output_dir=tmp_path / "dist", weights=checkpoint)
    assert local_hub.calls == [] and not (tmp_path / "dist" / BUNDLE_NAME).exists()
