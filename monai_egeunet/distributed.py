"""Helpers of the bundle's multi-GPU training config (``configs/multi_gpu_train.json``, run with ``torchrun``).

The config follows the model-zoo bundles (DistributedDataParallel, a ``DistributedSampler`` per loader, logging and
saving on rank 0 only); these helpers keep it independent of the order of the handler lists in ``train.json`` and
let it run on CPUs (``gloo``) as well as GPUs (``nccl``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from ignite.handlers import ProgressBar
from monai.handlers import StatsHandler, TensorBoardStatsHandler

__all__ = ["get_rank", "init_process_group", "local_device", "rank_handlers"]

logger = logging.getLogger(__name__)

#: handlers that only log or draw: run on rank 0 only, so that N processes do not print N copies. MONAI's
#: ``MetricsSaver`` is not one of them: it gathers the metric details of all ranks (and writes on rank 0 only), so
#: dropping it on a rank would leave the others waiting for it.
_LOGGING_HANDLERS = (StatsHandler, TensorBoardStatsHandler, ProgressBar)


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
    """The handlers this rank attaches: all on rank 0; on the others, all but the logging/plotting ones.

    The other ranks keep the handlers that change training (learning-rate schedule, validation, resuming), the
    checkpoint savers (ignite writes their files on rank 0 only) and the handlers that gather across ranks
    (``MetricsSaver``), so that every process follows the same schedule and no collective waits for a rank.

    Args:
        handlers: the single-process handler list (e.g. ``@train#handlers``); None entries are dropped.
        rank: the rank; default that of the current process.

    Returns:
        A new list (the handler objects themselves are shared).
    """
    rank = get_rank() if rank is None else rank
    kept = [h for h in handlers if h is not None]
    return kept if rank == 0 else [h for h in kept if not isinstance(h, _LOGGING_HANDLERS)]
