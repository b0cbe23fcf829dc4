"""Workflow tests in the style of the MONAI model-zoo CI: initialize, check_properties, run, finalize."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigWorkflow

from monai_egeunet import EGEUNet
from tests.utils import PH2_DIR, PH2_SPLIT, REPO_ROOT, require

CONFIGS = REPO_ROOT / "configs"
TRAIN = str(CONFIGS / "train.json")
EVALUATE = [TRAIN, str(CONFIGS / "evaluate.json")]
META = str(CONFIGS / "metadata.json")
LOGGING = str(CONFIGS / "logging.conf")
# small and quick: the workflows are what is tested here, not the model's quality
SMALL = {"roi_size": [64, 64], "batch_size": 4, "num_workers": 0, "val_interval": 1}


@pytest.fixture(autouse=True)
def _synthetic_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("MONAI_EGEUNET_DATA", str(tmp_path_factory.getbasetemp() / "synthetic_cache"))


def _workflow(config, tmp: Path, workflow_type: str = "train", **override) -> ConfigWorkflow:
    wf = ConfigWorkflow(
        config_file=config,
        meta_file=META,
        logging_file=LOGGING,
        workflow_type=workflow_type,
        bundle_root=str(REPO_ROOT),
        ckpt_dir=str(tmp / "models"),
        output_dir=str(tmp / "eval"),
        **{**SMALL, **override},
    )
    wf.initialize()
    return wf


def test_train_properties(tmp_path):
    wf = _workflow(TRAIN, tmp_path)
    assert wf.check_properties() == []
    assert wf.max_epochs == 15  # the demo set trains for demo_max_epochs when no dataset_dir is given
    wf.finalize()


def test_eval_properties(tmp_path):
    wf = _workflow(EVALUATE, tmp_path, workflow_type="eval")
    missing = wf.check_properties()
    assert not missing, missing
    wf.finalize()


def test_train_resume_and_evaluate_on_synthetic(tmp_path):
    wf = _workflow(TRAIN, tmp_path, demo_max_epochs=2)
    wf.run()
    trainer = wf.parser.get_parsed_content("train#trainer")
    evaluator = wf.parser.get_parsed_content("validate#evaluator")
    assert trainer.state.epoch == 2
    metrics = evaluator.state.metrics
    for name in ("val_mean_dice", "val_mean_iou", "val_pooled_dice", "val_pooled_iou", "val_mean_accuracy",
                 "val_pooled_sensitivity", "val_pooled_specificity"):
        assert 0.0 <= metrics[name] <= 1.0, name
    wf.finalize()

    model = tmp_path / "models" / "model.pt"
    checkpoint = tmp_path / "models" / "checkpoint.pt"
    assert model.is_file() and checkpoint.is_file()
    state = torch.load(model, map_location="cpu", weights_only=True)
    assert all(t.device.type == "cpu" for t in state.values())
    EGEUNet().load_state_dict(state, strict=True)  # a plain state dict, nothing wrapped
    assert not list((tmp_path / "models").glob(".*.tmp")), "a temporary file was left behind"

    # a second run with more epochs continues from the checkpoint instead of starting over
    first = torch.load(checkpoint, weights_only=False)
    assert first["trainer"]["epoch"] == 2
    wf = _workflow(TRAIN, tmp_path, demo_max_epochs=3)
    trainer = wf.parser.get_parsed_content("train#trainer")
    iterations_per_epoch = len(trainer.data_loader)
    wf.run()
    assert trainer.state.epoch == 3
    assert trainer.state.iteration == 3 * iterations_per_epoch
    best = wf.parser.get_parsed_content("validate#best_model")
    assert best.best_metric >= first["best_model"]["best_metric"]
    wf.finalize()

    # evaluation at full resolution with the checkpoint just trained
    wf = _workflow(EVALUATE, tmp_path, workflow_type="eval", ckpt_path=str(model), num_overlays=2)
    wf.run()
    wf.finalize()
    summary = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert 0.0 <= summary["metrics"]["test_pooled_dice"] <= 1.0 and "test_hd95" in summary["metrics"]
    assert (tmp_path / "eval" / "test_mean_dice_raw.csv").is_file()
    overlays = sorted((tmp_path / "eval" / "overlays").glob("*_overlay.png"))
    assert len(overlays) == 2


def _messages(exc: BaseException) -> str:
    """The messages of an exception and of its causes: MONAI's config parser wraps the one a user needs to read."""
    out = []
    while exc is not None:
        out.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    return "\n".join(out)


def test_evaluate_names_a_missing_checkpoint(tmp_path):
    wf = _workflow(EVALUATE, tmp_path, workflow_type="eval", ckpt_path=str(tmp_path / "absent.pt"))
    with pytest.raises(Exception) as err:
        wf.run()
    assert "absent.pt" in _messages(err.value) and "--ckpt_path" in _messages(err.value)


def test_bad_config_value_is_named(tmp_path):
    with pytest.raises(Exception) as err:
        _workflow(TRAIN, tmp_path, val_fraction=2.0).run()
    assert "val_fraction must be in [0, 1)" in _messages(err.value)


def test_no_validation_keeps_the_final_epoch(tmp_path):
    """val_fraction 0: every training image trains, validation never runs, model.pt is the final epoch's network."""
    wf = _workflow(TRAIN, tmp_path, demo_max_epochs=2, val_fraction=0)
    assert wf.check_properties() == []
    wf.run()
    datalist = json.loads((tmp_path / "eval" / "datalist.json").read_text())
    assert datalist["validation"] == [] and len(datalist["training"]) == 48
    assert wf.parser.get_parsed_content("validate#evaluator").state.epoch == 0  # never run
    saved = torch.load(tmp_path / "models" / "model.pt", map_location="cpu", weights_only=True)
    final = wf.parser.get_parsed_content("network").state_dict()
    assert saved.keys() == final.keys() and all(torch.equal(saved[k], final[k].cpu()) for k in saved)
    wf.finalize()


def test_ph2_train_and_evaluate(tmp_path):
    ph2, split = require(PH2_DIR), require(PH2_SPLIT)
    # the shipped weights' protocol: the split's 140 training ids all train, the final epoch is kept
    common = {"dataset_dir": str(ph2), "split_file": str(split), "val_fraction": 0}
    wf = _workflow(TRAIN, tmp_path, max_epochs=2, **common)
    assert wf.check_properties() == []
    wf.run()
    assert len(wf.parser.get_parsed_content("train#dataset")) == 140
    wf.finalize()
    wf = _workflow(EVALUATE, tmp_path, workflow_type="eval", ckpt_path=str(tmp_path / "models" / "model.pt"),
                   num_overlays=1, **common)
    wf.run()
    wf.finalize()
    summary = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert summary["num_images"] == 60
    # two short epochs at 64x64 already find the lesions far better than chance
    assert summary["metrics"]["test_pooled_dice"] > 0.5


def test_cli_training_command(tmp_path):
    """The user's command, with the overrides the README shows."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", "configs/train.json",
           "--train#trainer#max_epochs", "1", "--device", "cpu", "--roi_size", "[64, 64]", "--num_workers", "0",
           "--ckpt_dir", str(tmp_path / "models"), "--output_dir", str(tmp_path / "eval")]
    out = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "models" / "model.pt").is_file()
    assert (tmp_path / "eval" / "datalist.json").is_file()
