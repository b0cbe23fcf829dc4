from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch.distributed as dist
from ignite.engine import Engine, Events
from torch import nn

from monai_egeunet.distributed import get_rank
from monai_egeunet.networks.checkpoint import unwrap
from monai_egeunet.utils import atomic_write

__all__ = ["RankSummary"]


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
        with atomic_write(path, "w") as f:
            json.dump(self.summary(engine), f, indent=1)
        return path
