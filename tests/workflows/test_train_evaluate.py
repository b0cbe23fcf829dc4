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
from monai_egeunet.provenance import file_sha256, provenance_path
from tests.utils import PH2_DIR, PH2_SPLIT, REPO_ROOT, require

CONFIGS = REPO_ROOT / "configs"
TRAIN = str(CONFIGS / "train.json")
EVALUATE = [TRAIN, str(CONFIGS / "evaluate.json")]
META = str(CONFIGS / "metadata.json")
LOGGING = str(CONFIGS / "logging.conf")
# small and quick: the workflows are what is tested here, not the model's quality
SMALL = {"roi_size": [64, 64], "scale": 64, "batch_size": 4, "num_workers": 0, "val_interval": 1}


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
    wf = _workflow(TRAIN, tmp_path, demo_max_epochs=2, snapshot_interval=1)
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
    # every file written says what made it: the demo set, the epoch, the selection, the bundle version
    n_train = len(json.loads((tmp_path / "eval" / "datalist.json").read_text())["training"])
    snapshots = sorted(p.name for p in (tmp_path / "models" / "snapshots").iterdir())
    assert snapshots == ["model_epoch=1.pt", "model_epoch=1.pt.json", "model_epoch=2.pt", "model_epoch=2.pt.json"]
    for path, selection in ((model, "best val_mean_dice="), (checkpoint, "every 1 epoch"),
                            (tmp_path / "models" / "snapshots" / "model_epoch=2.pt", "every 1 epoch")):
        record = json.loads(provenance_path(path).read_text())
        assert record["sha256"] == file_sha256(path), path
        assert record["synthetic_demo"] is True and record["training_images"] == n_train, record
        assert record["selection"].startswith(selection) and record["max_epochs"] == 2, record
        assert record["bundle_version"] == json.loads(Path(META).read_text())["version"] and record["saved"]

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
    assert json.loads(provenance_path(checkpoint).read_text())["epochs"] == 3

    # evaluation at full resolution with the checkpoint just trained
    wf = _workflow(EVALUATE, tmp_path, workflow_type="eval", ckpt_path=str(model), num_overlays=2)
    wf.run()
    wf.finalize()
    summary = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert 0.0 <= summary["metrics"]["test_pooled_dice"] <= 1.0 and "test_hd95" in summary["metrics"]
    assert (tmp_path / "eval" / "test_mean_dice_raw.csv").is_file()
    overlays = sorted((tmp_path / "eval" / "overlays").glob("*_overlay.png"))
    assert len(overlays) == 2


def test_resume_from_a_checkpoint_of_the_previous_format(tmp_path):
    """The layout ResumableCheckpoint wrote (network, optimizer, lr_scheduler, best_model, trainer epoch and
    iteration): a rerun continues after its epoch and keeps its best score (no worse model replaces the best one)."""
    wf = _workflow(TRAIN, tmp_path, demo_max_epochs=2)
    trainer = wf.parser.get_parsed_content("train#trainer")
    per_epoch = len(trainer.data_loader)
    state = {k: wf.parser.get_parsed_content(k).state_dict() for k in ("network", "optimizer", "lr_scheduler")}
    state["best_model"] = {"best_metric": 0.999, "best_epoch": 1}
    state["trainer"] = {"epoch": 1, "iteration": per_epoch}
    torch.save(state, tmp_path / "models" / "checkpoint.pt")  # the savers created the folder
    wf.run()
    assert trainer.state.epoch == 2 and trainer.state.iteration == 2 * per_epoch
    assert not (tmp_path / "models" / "model.pt").exists(), "a model worse than the restored best one was saved"
    saved = torch.load(tmp_path / "models" / "checkpoint.pt", weights_only=True)
    assert saved.keys() == state.keys() and saved["trainer"] == {"epoch": 2, "iteration": 2 * per_epoch}
    assert saved["best_model"]["best_metric"] == 0.999
    wf.finalize()


def test_demo_runs_are_kept_out_of_models(tmp_path):
    """A model trained on the synthetic set never becomes the default weights of inference on real photos."""
    parser = ConfigWorkflow(config_file=TRAIN, workflow_type="train", logging_file=False, meta_file=META,
                            bundle_root=str(tmp_path)).parser
    assert parser.get_parsed_content("ckpt_dir") == str(tmp_path) + "/models/demo"
    parser["dataset_dir"] = str(tmp_path / "data")
    assert parser.get_parsed_content("ckpt_dir", reset=True) == str(tmp_path) + "/models"


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
    record = json.loads(provenance_path(tmp_path / "models" / "model.pt").read_text())
    assert record["selection"] == "final epoch" and record["epochs"] == 2 and record["validation_images"] == 0
    wf.finalize()


def test_fine_tuning_starts_from_the_given_weights(tmp_path):
    """--init_ckpt_path: training starts from those weights (with learning rate 0 it ends there too), the provenance
    says so, and a rerun resumes from its own checkpoint rather than starting from them again."""
    torch.manual_seed(3)
    init = tmp_path / "init.pt"
    start = EGEUNet().state_dict()
    torch.save(start, init)
    wf = _workflow(TRAIN, tmp_path, demo_max_epochs=1, val_fraction=0, learning_rate=0.0, init_ckpt_path=str(init))
    wf.run()
    wf.finalize()
    saved = torch.load(tmp_path / "models" / "model.pt", map_location="cpu", weights_only=True)
    # AdamW's decoupled weight decay scales by the learning rate: 0 leaves every weight as loaded
    assert all(torch.equal(saved[k], start[k]) for k in start), "training did not start from --init_ckpt_path"
    assert json.loads(provenance_path(tmp_path / "models" / "model.pt").read_text())["initialised_from"] == str(init)
    # a changed init file is not reloaded over the resumed state
    torch.save({k: torch.zeros_like(v) for k, v in start.items()}, init)
    wf = _workflow(TRAIN, tmp_path, demo_max_epochs=2, val_fraction=0, learning_rate=0.0, init_ckpt_path=str(init))
    wf.run()
    wf.finalize()
    saved = torch.load(tmp_path / "models" / "model.pt", map_location="cpu", weights_only=True)
    # (the cosine schedule's eta_min gives epoch 2 a learning rate of about 1e-8, not 0)
    assert all(torch.allclose(saved[k], start[k], atol=1e-5) for k in start), "the run restarted from the init file"


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
