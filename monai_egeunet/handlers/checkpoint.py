"""Checkpoint handlers: atomic writes, a resumable training state, and a best model saved as a plain CPU state dict.

MONAI's ``CheckpointSaver`` writes in place (``atomic=False``), names interval checkpoints by epoch, and keeps tensors
on the training device; a bundle shared with CPU users and runs that must survive being killed need all three
handled, hence these handlers.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from torch import nn

from monai_egeunet.networks.checkpoint import load_weights, unwrap

__all__ = ["save_atomic", "ResumableCheckpoint", "BestModelSaver", "FinalModelSaver", "WeightsLoader"]

logger = logging.getLogger(__name__)


def save_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file beside ``path``, then rename: a crash never leaves a truncated file.

    Args:
        obj: what to save.
        path: destination.

    Returns:
        The destination path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes the file private (0600); a shared bundle's files must be readable like any other file
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, Mapping):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


class ResumableCheckpoint:
    """Saves the whole training state every ``interval`` epochs, atomically, and resumes from it on the next run.

    Attached to a trainer, it writes ``save_dir/filename`` with the state dicts of ``save_dict`` plus the trainer's
    own (epoch, iteration), replacing the previous file only once the new one is complete. When that file exists
    as the trainer starts, everything is restored and training continues with the next epoch, so an interrupted
    run loses at most ``interval`` epochs. Put the :class:`BestModelSaver` in ``save_dict`` so the best score so
    far survives too.

    Args:
        save_dir: folder of the checkpoint.
        save_dict: objects with ``state_dict``/``load_state_dict`` (network, optimizer, lr scheduler, ...).
        filename: checkpoint file name.
        interval: save every this many epochs (and always when training completes).
        resume: load the checkpoint at start when it exists.
        map_location: where to load tensors.
        enabled: False makes ``attach`` a no-op (e.g. on ranks other than 0 in multi-GPU training: they still
            resume, pass ``save=False`` for that instead).
        save: write checkpoints (False on ranks other than 0).

    Example::

        >>> ResumableCheckpoint("models", {"network": net, "optimizer": opt}).attach(trainer)  # doctest: +SKIP
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        save_dict: Mapping[str, Any],
        filename: str = "checkpoint.pt",
        interval: int = 1,
        resume: bool = True,
        map_location: Any = "cpu",
        enabled: bool = True,
        save: bool = True,
    ) -> None:
        if interval < 1:
            raise ValueError(f"ResumableCheckpoint interval must be >= 1, got {interval}")
        self.path = Path(save_dir) / filename
        self.save_dict = dict(save_dict)
        self.interval = interval
        self.resume = resume
        self.map_location = map_location
        self.enabled = enabled
        self.save_enabled = save

    def attach(self, engine: Engine) -> None:
        if not self.enabled:
            return
        if self.resume:
            engine.add_event_handler(Events.STARTED, self.load)
        if self.save_enabled:
            engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self.save)
            engine.add_event_handler(Events.COMPLETED, self.save)

    def _objects(self, engine: Engine) -> dict[str, Any]:
        return {k: unwrap(v) if isinstance(v, nn.Module) else v for k, v in self.save_dict.items()}

    def save(self, engine: Engine) -> None:
        state = {k: _to_cpu(v.state_dict()) for k, v in self._objects(engine).items()}
        state["trainer"] = {"epoch": engine.state.epoch, "iteration": engine.state.iteration}
        save_atomic(state, self.path)

    def load(self, engine: Engine) -> None:
        if not self.path.exists():
            return
        try:
            state = torch.load(self.path, map_location=self.map_location, weights_only=False)
        except Exception as e:
            raise RuntimeError(f"cannot resume from {self.path} ({e}); delete it to start over") from e
        for key, obj in self._objects(engine).items():
            if key not in state:
                raise RuntimeError(f"checkpoint {self.path} has no '{key}' state; delete it to start over")
            obj.load_state_dict(state[key])
        done = state["trainer"]["epoch"]
        if engine.state.max_epochs is not None and done > engine.state.max_epochs:
            raise RuntimeError(
                f"checkpoint {self.path} is at epoch {done}, beyond max_epochs={engine.state.max_epochs}; raise "
                f"max_epochs or delete the checkpoint"
            )
        engine.state.epoch = done
        engine.state.iteration = state["trainer"]["iteration"]
        logger.info(f"resumed from {self.path} after epoch {done}")


class BestModelSaver:
    """Saves the network as a plain CPU state dict (``torch.load`` + ``load_state_dict``, no wrapper) whenever the
    evaluator's key metric improves; the file is replaced atomically.

    Its ``state_dict`` (best score and epoch) can go into a :class:`ResumableCheckpoint` so a resumed run does not
    overwrite a better model with a worse one.

    Args:
        save_dir: folder of the model file.
        network: the network (a DistributedDataParallel wrapper is unwrapped).
        filename: the model file name.
        metric_name: the metric to track; default: the evaluator's key metric.
        save: write files (False on ranks other than 0).

    Example::

        >>> BestModelSaver("models", net).attach(evaluator)  # doctest: +SKIP
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        network: nn.Module,
        filename: str = "model.pt",
        metric_name: str | None = None,
        save: bool = True,
    ) -> None:
        self.path = Path(save_dir) / filename
        self.network = network
        self.metric_name = metric_name
        self.save_enabled = save
        self.best_metric = -float("inf")
        self.best_epoch = -1

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        name = self.metric_name or getattr(engine.state, "key_metric_name", None)
        if name is None or name not in engine.state.metrics:
            raise KeyError(f"BestModelSaver: metric {name!r} not among {sorted(engine.state.metrics)}")
        value = float(engine.state.metrics[name])
        if value > self.best_metric:
            self.best_metric, self.best_epoch = value, int(engine.state.epoch)
            if self.save_enabled:
                save_atomic(_to_cpu(unwrap(self.network).state_dict()), self.path)
            logger.info(f"new best {name}={value:.4f} at epoch {self.best_epoch}: saved {self.path}")

    def state_dict(self) -> dict[str, float]:
        return {"best_metric": self.best_metric, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: Mapping[str, float]) -> None:
        self.best_metric = float(state["best_metric"])
        self.best_epoch = int(state["best_epoch"])


class FinalModelSaver:
    """Saves the network as a plain CPU state dict when training completes: the model selection of a run with no
    validation images, which keeps its final epoch (as the original EGE-UNet release does, on all training images).

    Args:
        save_dir: folder of the model file.
        network: the network (a DistributedDataParallel wrapper is unwrapped).
        filename: the model file name.
        save: write files (False on ranks other than 0).

    Example::

        >>> FinalModelSaver("models", net).attach(trainer)  # doctest: +SKIP
    """

    def __init__(self, save_dir: str | os.PathLike, network: nn.Module, filename: str = "model.pt", save: bool = True) -> None:
        self.path = Path(save_dir) / filename
        self.network = network
        self.save_enabled = save

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if self.save_enabled:
            save_atomic(_to_cpu(unwrap(self.network).state_dict()), self.path)
            logger.info(f"final model of epoch {engine.state.epoch} saved: {self.path}")


class WeightsLoader:
    """Loads network weights when an engine starts: this bundle's ``model.pt``, a MONAI/ignite checkpoint, or a
    checkpoint of the original EGE-UNet release (see :func:`monai_egeunet.networks.load_weights`).

    Args:
        load_path: the checkpoint file.
        network: the network to load into.
        map_location: where to load tensors.
        strict: passed to ``load_state_dict``.

    Example::

        >>> WeightsLoader("models/model.pt", net).attach(evaluator)  # doctest: +SKIP
    """

    def __init__(self, load_path: str | os.PathLike, network: nn.Module, map_location: Any = "cpu", strict: bool = True) -> None:
        self.load_path = load_path
        self.network = network
        self.map_location = map_location
        self.strict = strict

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine | None = None) -> None:
        load_weights(self.network, self.load_path, map_location=self.map_location, strict=self.strict)
