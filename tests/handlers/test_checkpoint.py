"""The checkpoint handlers on top of MONAI's (atomic writes, CPU tensors, provenance, resuming, the original release's
layouts), the one atomic-write helper, and the inference-form handler, on engines and files the tests build."""

from __future__ import annotations

import json
import os
import stat

import pytest
import torch
from ignite.engine import Engine, Events

from monai_egeunet import EGEUNet
from monai_egeunet.handlers import AtomicCheckpointSaver, FuseNetwork, ResumeCheckpointLoader, WeightsLoader
from monai_egeunet.provenance import file_sha256, provenance_path, read_provenance
from monai_egeunet.utils import atomic_write


def _evaluator(scores):
    """An engine whose key metric takes the given values, one per epoch."""
    engine = Engine(lambda e, b: None)
    engine.state.key_metric_name = "dice"

    @engine.on(Events.EPOCH_COMPLETED)
    def _score(e):
        e.state.metrics["dice"] = scores[e.state.epoch - 1]

    return engine


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "sub" / "f.json"
    with atomic_write(path, "w") as f:
        f.write("old")
    with pytest.raises(RuntimeError), atomic_write(path, "w") as f:
        f.write("half of the new")
        raise RuntimeError("killed while writing")
    assert path.read_text() == "old" and os.listdir(path.parent) == ["f.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # readable like any file, not mkstemp's 0600
    with pytest.raises(ValueError):
        atomic_write(path, "a").__enter__()


def test_best_model_is_a_plain_cpu_state_dict_with_provenance(tmp_path):
    net = torch.nn.Linear(2, 1)
    saver = AtomicCheckpointSaver(str(tmp_path), {"model": net}, save_key_metric=True, key_metric_filename="model.pt",
                                  provenance={"dataset": "built", "bundle_version": "1.2.3"})
    evaluator = _evaluator([0.5, 0.4, 0.7])
    saver.attach(evaluator)
    evaluator.run([0], max_epochs=3)
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    assert set(state) == {"weight", "bias"} and all(v.device.type == "cpu" for v in state.values())
    record = read_provenance(tmp_path / "model.pt")
    assert record["sha256"] == file_sha256(tmp_path / "model.pt") and record["dataset"] == "built"
    assert record["selection"] == "best dice=0.7000 at epoch 3" and record["epochs"] == 3
    assert saver.state_dict() == {"best_metric": 0.7, "best_epoch": 3}
    assert sorted(os.listdir(tmp_path)) == ["model.pt", "model.pt.json"]

    # a saver told of a better score so far (resuming) keeps the file until it is beaten
    again = AtomicCheckpointSaver(str(tmp_path), {"model": torch.nn.Linear(2, 1)}, save_key_metric=True,
                                  key_metric_filename="model.pt")
    again.load_state_dict({"best_metric": 0.9, "best_epoch": 3})
    before = (tmp_path / "model.pt").read_bytes()
    engine = _evaluator([0.8, 0.95])
    again.attach(engine)
    engine.run([0], max_epochs=1)
    assert (tmp_path / "model.pt").read_bytes() == before
    engine.run([0], max_epochs=2)
    assert (tmp_path / "model.pt").read_bytes() != before and again.best_metric == 0.95


def test_resumed_best_reaches_the_monai_evaluator(tmp_path):
    # after a resume, MONAI's evaluator must compare (and log "Got new best metric") against the restored best
    from monai.engines import SupervisedEvaluator
    from monai.handlers import MeanDice

    net = torch.nn.Conv2d(1, 1, 1)
    data = [{"image": torch.ones(1, 1, 4, 4), "label": torch.ones(1, 1, 4, 4)}]
    evaluator = SupervisedEvaluator(device="cpu", val_data_loader=data, network=net,
                                    postprocessing=lambda d: d, key_val_metric={"dice": MeanDice()})
    saver = AtomicCheckpointSaver(str(tmp_path), {"model": net}, save_key_metric=True, key_metric_filename="model.pt")
    saver.attach(evaluator)
    assert evaluator.state.best_metric == -1
    saver.load_state_dict({"best_metric": 0.9, "best_epoch": 5})
    assert (evaluator.state.best_metric, evaluator.state.best_metric_epoch) == (0.9, 5)
    late = AtomicCheckpointSaver(str(tmp_path), {"model": net}, save_key_metric=True, key_metric_filename="model.pt")
    late.load_state_dict({"best_metric": 0.8, "best_epoch": 4})
    late.attach(evaluator)  # restored before it was attached
    assert (evaluator.state.best_metric, evaluator.state.best_metric_epoch) == (0.8, 4)


def test_a_save_that_fails_leaves_the_previous_file(tmp_path, monkeypatch):
    net = torch.nn.Linear(2, 1)
    saver = AtomicCheckpointSaver(str(tmp_path), {"model": net}, save_interval=1, interval_filename="checkpoint.pt",
                                  progress_key="trainer")
    trainer = Engine(lambda e, b: None)
    saver.attach(trainer)
    trainer.run([0, 0], max_epochs=1)
    first = (tmp_path / "checkpoint.pt").read_bytes()
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["trainer"] == {"epoch": 1, "iteration": 2}

    def dying_save(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise KeyboardInterrupt  # the run is killed in the middle of writing

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        trainer.run([0, 0], max_epochs=2)
    assert (tmp_path / "checkpoint.pt").read_bytes() == first
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.pt"], "a temporary file was left behind"


def test_resume_loader(tmp_path):
    net, path = torch.nn.Linear(2, 1), tmp_path / "checkpoint.pt"
    trainer = Engine(lambda e, b: None)
    ResumeCheckpointLoader(path, {"network": net}).attach(trainer)
    trainer.run([0, 0], max_epochs=1)  # no checkpoint yet: a fresh start
    assert trainer.state.epoch == 1
    saved = torch.nn.Linear(2, 1)
    torch.save({"network": saved.state_dict(), "trainer": {"epoch": 2, "iteration": 4}}, path)
    trainer = Engine(lambda e, b: None)
    epochs = []
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda e: epochs.append(e.state.epoch))
    ResumeCheckpointLoader(path, {"network": net}).attach(trainer)
    trainer.run([0, 0], max_epochs=3)
    assert epochs == [3] and trainer.state.iteration == 6 and torch.equal(net.weight, saved.weight)
    path.write_bytes(b"not a checkpoint")
    trainer = Engine(lambda e, b: None)
    ResumeCheckpointLoader(path, {"network": net}).attach(trainer)
    with pytest.raises(RuntimeError, match="delete"):
        trainer.run([0], max_epochs=3)


def test_weights_loader_reads_the_original_layouts(tmp_path):
    source = EGEUNet()
    state = source.state_dict()
    files = {"plain.pt": state, "latest.pth": {"epoch": 3, "model_state_dict": {f"module.{k}": v for k, v in state.items()}},
             "ignite.pt": {"model": state, "optimizer": {}}}
    for name, content in files.items():
        torch.save(content, tmp_path / name)
        net = EGEUNet()
        WeightsLoader(tmp_path / name, {"model": net})()
        assert all(torch.equal(net.state_dict()[k], v) for k, v in state.items()), name
    with pytest.raises(FileNotFoundError, match="--ckpt_path"):
        WeightsLoader(tmp_path / "none.pt", {"model": EGEUNet()})()
    torch.save({"weight": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="do not fit"):
        WeightsLoader(tmp_path / "other.pt", {"model": EGEUNet()})()
    with pytest.raises(ValueError):
        WeightsLoader(tmp_path / "plain.pt", {"model": EGEUNet(), "other": EGEUNet()})
    assert provenance_path(tmp_path / "plain.pt").name == "plain.pt.json"


def test_fuse_network_swaps_the_engine_network_while_it_runs():
    plain, fused = torch.nn.Identity(), torch.nn.Identity()
    seen = []
    engine = Engine(lambda e, b: seen.append(e.network))
    engine.network = plain
    calls = []
    FuseNetwork(lambda net: calls.append(net) or fused).attach(engine)
    engine.run([0, 0], max_epochs=1)
    engine.run([0], max_epochs=2)  # a second run fuses the plain network again, not the fused one
    assert len(seen) == 4 and all(n is fused for n in seen) and engine.network is plain
    assert calls == [plain, plain]

    def refuse(net):
        raise TypeError("fuse_for_inference takes an EGEUNet")

    engine = Engine(lambda e, b: None)
    engine.network = plain
    FuseNetwork(refuse).attach(engine)
    with pytest.raises(TypeError, match="--fuse_network false"):
        engine.run([0], max_epochs=1)


def test_provenance_record_of_replaced_weights_is_not_believed(tmp_path, caplog):
    net = torch.nn.Linear(2, 1)
    saver = AtomicCheckpointSaver(str(tmp_path), {"model": net}, save_final=True, final_filename="model.pt",
                                  provenance={"dataset": "built"})
    trainer = Engine(lambda e, b: None)
    saver.attach(trainer)
    trainer.run([0], max_epochs=2)
    record = json.loads(provenance_path(tmp_path / "model.pt").read_text())
    assert record["selection"] == "final epoch" and record["epochs"] == 2
    torch.save(torch.nn.Linear(2, 1).state_dict(), tmp_path / "model.pt")
    assert read_provenance(tmp_path / "model.pt") is None
    assert "describes other weights" in caplog.text
