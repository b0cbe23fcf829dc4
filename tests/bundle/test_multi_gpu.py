"""configs/multi_gpu_train.json under torchrun: two CPU processes (gloo) train one epoch of the synthetic demo set."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys

import pytest
import torch

from monai_egeunet.distributed import rank_handlers
from monai_egeunet.handlers import AtomicCheckpointSaver
from tests.utils import REPO_ROOT


def test_rank_handlers_keep_training_handlers_on_other_ranks(tmp_path):
    from ignite.handlers import ProgressBar
    from monai.handlers import LrScheduleHandler, MetricsSaver, StatsHandler, TensorBoardStatsHandler

    saver = AtomicCheckpointSaver(str(tmp_path), {"model": torch.nn.Linear(1, 1)}, save_key_metric=True)
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], 0.1)
    lr = LrScheduleHandler(torch.optim.lr_scheduler.StepLR(optimizer, 1))
    stats, board, bar = StatsHandler(), TensorBoardStatsHandler(log_dir=str(tmp_path)), ProgressBar()
    # MONAI's MetricsSaver gathers every rank's details: dropping it on a rank would leave the others waiting
    metrics = MetricsSaver(save_dir=str(tmp_path))
    handlers = [lr, stats, saver, metrics, board, bar, None]
    assert rank_handlers(handlers, rank=0) == [lr, stats, saver, metrics, board, bar]
    assert rank_handlers(handlers, rank=1) == [lr, saver, metrics]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="this torch build has no torch.distributed")
@pytest.mark.parametrize("val_fraction", [0.3, 0])  # 0: no validation, rank 0 saves the final model
def test_torchrun_two_cpu_processes(tmp_path, val_fraction):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not installed")
    env = {**os.environ, "MONAI_EGEUNET_DATA": str(tmp_path / "data"), "OMP_NUM_THREADS": "1",
           "CUDA_VISIBLE_DEVICES": ""}  # CPU and gloo even on a GPU machine
    cmd = [
        torchrun, "--standalone", "--nnodes=1", "--nproc_per_node=2",
        "-m", "monai.bundle", "run", "training",
        "--config_file", "['configs/train.json','configs/multi_gpu_train.json']",
        "--max_epochs", "1", "--demo_max_epochs", "1", "--roi_size", "[64, 64]", "--batch_size", "2",
        "--num_workers", "0", "--val_fraction", str(val_fraction), "--ckpt_dir", str(tmp_path / "models"), "--output_dir", str(tmp_path / "eval"),
    ]
    result = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-5000:]

    # each rank reports what it did; both trained, on disjoint halves of the training list, and ended with the
    # same weights (DistributedDataParallel kept them in sync)
    ranks = [json.loads((tmp_path / "eval" / "ranks" / f"rank_{r}.json").read_text()) for r in (0, 1)]
    training = {item["image"] for item in json.loads((tmp_path / "eval" / "datalist.json").read_text())["training"]}
    for r, summary in enumerate(ranks):
        assert summary["rank"] == r and summary["world_size"] == 2 and summary["device"] == "cpu"
        assert summary["epochs"] == 1 and summary["iterations"] == math.ceil(math.ceil(len(training) / 2) / 2)
    seen = [set(s["images"]) for s in ranks]
    assert seen[0] and seen[1] and not seen[0] & seen[1], "the ranks were fed the same images"
    assert seen[0] | seen[1] <= training and len(seen[0] | seen[1]) >= len(training) - 1
    assert ranks[0]["weights_checksum"] == pytest.approx(ranks[1]["weights_checksum"], rel=1e-9)

    # one model and one checkpoint (each with its provenance record), written by rank 0 alone; rank 0 logs, the
    # other ranks stay quiet
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["checkpoint.pt", "checkpoint.pt.json",
                                                                       "model.pt", "model.pt.json"]
    # trainer and evaluator of rank 0 only
    assert log.count("Engine run finished") == (2 if val_fraction else 1)
    state = torch.load(tmp_path / "models" / "checkpoint.pt", weights_only=True)
    assert state["trainer"]["epoch"] == 1
    assert not any(k.startswith("module.") for k in state["network"]), "the DDP wrapper leaked into the checkpoint"
