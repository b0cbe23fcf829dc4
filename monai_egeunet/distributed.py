"""Helpers of the bundle's multi-GPU training config (``configs/multi_gpu_train.json``, run with ``torchrun``).

The config follows the model-zoo bundles (DistributedDataParallel, a ``DistributedSampler`` per loader, logging and
saving on rank 0 only); these helpers keep it independent of the order of the handler lists in ``train.json`` and
let it run on CPUs (``gloo``) as well as GPUs (``nccl``).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from ignite.engine import Engine, Events
from ignite.handlers import ProgressBar
from monai.handlers import MetricsSaver, StatsHandler, TensorBoardStatsHandler
from torch import nn

from monai_egeunet.networks.checkpoint import unwrap

__all__ = ["RankSummary", "get_rank", "init_process_group", "local_device", "rank_handlers"]

logger = logging.getLogger(__name__)

#: handlers that only log or draw: run on rank 0 only, so that N processes do not print N copies
_LOGGING_HANDLERS = (StatsHandler, TensorBoardStatsHandler, ProgressBar, MetricsSaver)


def get_rank() -> int:
    """This process's rank in the default process group, 0 when there is none."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def local_device() -> torch.device:
    """``cuda:{LOCAL_RANK}`` (``LOCAL_RANK`` is set by ``torchrun``) when CUDA is available, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def init_process_group(backend: str | None = None) -> None:
    """Joins the default process group, from the environment ``torchrun`` sets; does nothing when already joined.

    Args:
        backend: ``nccl`` or ``gloo``; default ``nccl`` when CUDA is available, else ``gloo`` (CPU training).
    """
    if dist.is_initialized():
        return
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        # each process drives its own GPU; NCCL collectives (barrier included) use the current device
        torch.cuda.set_device(local_device())
    dist.init_process_group(backend=backend)
    logger.debug(f"rank {dist.get_rank()} of {dist.get_world_size()} joined ({backend})")


def rank_handlers(handlers: Sequence[Any], rank: int | None = None) -> list[Any]:
    """The handlers this rank attaches: all on rank 0; on the others, no logging/plotting handlers and no file
    writes from handlers that can skip them (``ResumableCheckpoint``, ``BestModelSaver``, ``FinalModelSaver``: their
    ``save_enabled``).

    The other ranks keep the handlers that change training (learning-rate schedule, validation, resuming) so that
    every process follows the same schedule.

    Args:
        handlers: the single-process handler list (e.g. ``@train#handlers``); None entries are dropped.
        rank: the rank; default that of the current process.

    Returns:
        A new list (the handler objects themselves are shared).
    """
    rank = get_rank() if rank is None else rank
    kept = [h for h in handlers if h is not None]
    if rank == 0:
        return kept
    kept = [h for h in kept if not isinstance(h, _LOGGING_HANDLERS)]
    for h in kept:
        if hasattr(h, "save_enabled"):
            h.save_enabled = False
    return kept


class RankSummary:
    """Writes, when training completes, what this rank did: ``output_dir/ranks/rank_{rank}.json``.

    One small file per process (``rank``, ``world_size``, ``device``, ``epochs``, ``iterations``, the training
    images this rank was fed and a checksum of its final weights): it shows that every rank trained on its own share
    of the data and that DistributedDataParallel kept the replicas identical.

    Args:
        output_dir: the run's output folder.
        network: the (wrapped) network, for the weights checksum.

    Example::

        >>> RankSummary("eval", network).attach(trainer)  # doctest: +SKIP
    """

    def __init__(self, output_dir: str | os.PathLike, network: nn.Module | None = None) -> None:
        self.output_dir = Path(output_dir)
        self.network = network
        self.images: list[str] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.record)
        engine.add_event_handler(Events.COMPLETED, self.write)

    def record(self, engine: Engine) -> None:
        batch = engine.state.batch
        # a collated dict, or the list of items MONAI's engines decollate it into
        for item in batch if isinstance(batch, list) else [batch]:
            image = item.get("image") if isinstance(item, dict) else None
            names = getattr(image, "meta", {}).get("filename_or_obj", [])
            self.images.extend(str(n) for n in ([names] if isinstance(names, str) else names))

    def summary(self, engine: Engine) -> dict[str, Any]:
        checksum = None
        if self.network is not None:
            checksum = float(sum(p.detach().double().abs().sum().item() for p in unwrap(self.network).parameters()))
        return {
            "rank": get_rank(),
            "world_size": dist.get_world_size() if dist.is_initialized() else 1,
            "device": str(next(iter(unwrap(self.network).parameters())).device) if self.network is not None else None,
            "epochs": int(engine.state.epoch),
            "iterations": int(engine.state.iteration),
            "images": sorted(set(self.images)),
            "weights_checksum": checksum,
        }

    def write(self, engine: Engine) -> Path:
        path = self.output_dir / "ranks" / f"rank_{get_rank()}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.summary(engine), indent=1))
        return path
