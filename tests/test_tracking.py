"""Experiment tracking with MLflow through MONAI's own ``--tracking`` option: what a run records, read back with
MLflow's client."""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow
from monai.utils import path_to_sqlite_uri

from monai_egeunet import EGEUNet
from monai_egeunet.data import make_synthetic_dataset
from tests.utils import REPO_ROOT

mlflow = pytest.importorskip("mlflow", reason="experiment tracking needs the 'tracking' extra (mlflow-skinny)")
pytest.importorskip("sqlalchemy", reason="MLflow's local SQLite store needs sqlalchemy (the 'tracking' extra)")
from mlflow.tracking import MlflowClient  # noqa: E402

CONFIGS = REPO_ROOT / "configs"
TRAIN = str(CONFIGS / "train.json")
EVALUATE = [TRAIN, str(CONFIGS / "evaluate.json")]
META = str(CONFIGS / "metadata.json")
SETTINGS = str(CONFIGS / "mlflow.json")
# two epochs of two iterations: what is recorded is tested here, not the model
SMALL = {"roi_size": [64, 64], "batch_size": 4, "num_workers": 0, "train#trainer#max_epochs": 2}


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory) -> Path:
    """12 synthetic 64x64 image/mask pairs: 8 train, 4 validate with the bundle's 7:3 split."""
    return make_synthetic_dataset(tmp_path_factory.mktemp("tracking_data"), num_images=12, image_size=(64, 64))


def _run(config, workflow_type: str, tracking: str, bundle_root: Path, **override) -> None:
    # bundle_root moves every output (models/, eval/) into the test folder, the way the bundle's paths are derived
    wf = ConfigWorkflow(config_file=config, meta_file=META, logging_file=False, workflow_type=workflow_type,
                        tracking=tracking, bundle_root=str(bundle_root), **override)
    wf.initialize()
    wf.run()
    wf.finalize()


def _runs(tracking_uri: str, experiment: str) -> tuple[MlflowClient, list]:
    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no experiment {experiment!r} in {tracking_uri}"
    return client, sorted(client.search_runs([exp.experiment_id]), key=lambda r: r.info.start_time)


def _history(client: MlflowClient, run, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)]


def _artifact(client: MlflowClient, run, name: str, dst: Path) -> Path:
    names = [a.path for a in client.list_artifacts(run.info.run_id)]
    matches = fnmatch.filter(names, name)
    assert len(matches) == 1, f"artifact {name} not among {names}"
    return Path(client.download_artifacts(run.info.run_id, matches[0], str(dst)))


def test_mlflow_tracking_of_training_and_evaluation(tmp_path, tiny_set):
    """``--tracking mlflow`` with MONAI's default settings: a local SQLite store in eval/, one run per workflow."""
    _run(TRAIN, "train", "mlflow", tmp_path, dataset_dir=str(tiny_set), **SMALL)
    _run(EVALUATE, "eval", "mlflow", tmp_path, dataset_dir=str(tiny_set),
         ckpt_path=str(tmp_path / "models" / "model.pt"), roi_size=[64, 64], num_workers=0, num_overlays=1)

    client, runs = _runs(path_to_sqlite_uri(tmp_path / "eval" / "mlruns.db"), "monai_experiment")
    assert len(runs) == 2, [r.info.run_name for r in runs]
    train_run, eval_run = runs
    assert train_run.info.status == eval_run.info.status == "FINISHED"

    iterations = 2  # 8 training images, batch 4
    assert train_run.data.params["max_epochs"] == "2" and train_run.data.params["epoch_length"] == str(iterations)
    losses = _history(client, train_run, "train_loss")
    assert [s for s, _ in losses] == list(range(1, 2 * iterations + 1))
    # the per-epoch loss is the mean of that epoch's iteration losses (ignite's Average, the trainer's key metric)
    epoch_losses = _history(client, train_run, "train_mean_loss")
    assert [s for s, _ in epoch_losses] == [1, 2]
    for epoch, value in epoch_losses:
        np.testing.assert_allclose(value, np.mean([v for _, v in losses[(epoch - 1) * iterations: epoch * iterations]]),
                                   rtol=1e-5)
    for key in ("val_mean_dice", "val_pooled_dice", "val_mean_iou"):
        values = _history(client, train_run, key)
        assert [s for s, _ in values] == [1, 2], key
        assert all(0.0 <= v <= 1.0 for _, v in values), key
    assert [v for _, v in _history(client, train_run, "lr_group_0")][0] == pytest.approx(1e-3)  # per iteration
    # the executed configuration (every parameter of the run) is the run's artifact
    config = json.loads(_artifact(client, train_run, "config_*.json", tmp_path / "dl").read_text())
    assert config["dataset_dir"] == str(tiny_set) and config["train"]["trainer"]["max_epochs"] == 2

    summary = json.loads((tmp_path / "eval" / "metrics.json").read_text())["metrics"]
    for key in ("test_mean_dice", "test_pooled_dice", "test_hd95"):
        (step, value), = _history(client, eval_run, key)
        np.testing.assert_allclose(value, summary[key], rtol=1e-6)
    assert "dataset_dir" in json.loads(_artifact(client, eval_run, "config_*.json", tmp_path / "dl_eval").read_text())


def test_bundle_tracking_settings_log_parameters_and_model(tmp_path, tiny_set):
    """``--tracking configs/mlflow.json`` adds the hyperparameters and the trained model; ``--tracking_uri`` moves
    the store (here to another local database, as a shared server's URI would)."""
    (tmp_path / "store").mkdir()
    uri = path_to_sqlite_uri(tmp_path / "store" / "runs.db")
    _run(TRAIN, "train", SETTINGS, tmp_path, dataset_dir=str(tiny_set), tracking_uri=uri, **SMALL)
    _run(EVALUATE, "eval", SETTINGS, tmp_path, dataset_dir=str(tiny_set), tracking_uri=uri,
         ckpt_path=str(tmp_path / "models" / "model.pt"), roi_size=[64, 64], num_workers=0, num_overlays=1)
    assert not (tmp_path / "eval" / "mlruns.db").exists()

    client, (train_run, eval_run) = _runs(uri, "egeunet_skin_lesion")
    params = train_run.data.params
    assert params["network"] == "EGEUNet" and params["num_parameters"] == "53374"
    assert params["learning_rate"] == "0.001" and params["batch_size"] == "4" and params["roi_size"] == "[64, 64]"
    assert params["num_training_images"] == "8" and params["num_validation_images"] == "4"
    assert params["dataset_dir"] == str(tiny_set) and params["max_epochs"] == "2"
    assert len(_history(client, train_run, "train_mean_loss")) == 2

    model = _artifact(client, train_run, "model.pt", tmp_path / "dl")
    assert model.read_bytes() == (tmp_path / "models" / "model.pt").read_bytes()
    EGEUNet().load_state_dict(torch.load(model, map_location="cpu", weights_only=True), strict=True)
    split = json.loads(_artifact(client, train_run, "datalist.json", tmp_path / "dl").read_text())
    assert len(split["training"]) == 8 and len(split["validation"]) == 4

    assert eval_run.data.params["ckpt_path"] == str(tmp_path / "models" / "model.pt")
    assert eval_run.data.params["num_test_images"] == "4"  # no test split: the validation list is evaluated
    logged = json.loads(_artifact(client, eval_run, "metrics.json", tmp_path / "dl_eval").read_text())
    assert logged == json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert _artifact(client, eval_run, "test_mean_dice_raw.csv", tmp_path / "dl_eval").is_file()
    assert _artifact(client, eval_run, "*_overlay.png", tmp_path / "dl_eval").stat().st_size > 0  # num_overlays 1
