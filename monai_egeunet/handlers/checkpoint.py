"""MONAI's ``CheckpointSaver`` and ``CheckpointLoader`` with what this bundle needs on top of them.

- :class:`AtomicCheckpointSaver`: writes each file atomically (MONAI's saver writes in place, so a run killed while
  saving leaves a truncated file, and with ``n_saved=1`` it deletes the previous file before writing the next),
  with CPU tensors (a bundle trained on a GPU loads on a CPU), a fixed name for the interval checkpoint (the file a
  rerun resumes from), the trainer's epoch and iteration, and a provenance record beside every file
  (:mod:`monai_egeunet.provenance`).
- :class:`ResumeCheckpointLoader`: resumes from that checkpoint when it exists; a first run has none.
- :class:`WeightsLoader`: loads network weights from this bundle's files and the original EGE-UNet release's
  checkpoint layouts, and logs which weights were loaded and what they were trained on.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine
from ignite.handlers import Checkpoint, DiskSaver
from monai.handlers import CheckpointLoader, CheckpointSaver

from monai_egeunet.networks.checkpoint import extract_state_dict
from monai_egeunet.provenance import describe_weights, provenance_path, read_provenance, write_provenance
from monai_egeunet.utils import atomic_write

__all__ = ["AtomicCheckpointSaver", "ResumeCheckpointLoader", "WeightsLoader"]

logger = logging.getLogger(__name__)


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, Mapping):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


class _EngineProgress:
    """The epoch and iteration of the engine a saver or loader is attached to, as a checkpoint entry.

    A trainer cannot be put in its own handlers' ``save_dict`` from a bundle config (the reference would be
    circular); this stands in for it. Saved as ``{"epoch": e, "iteration": i}``.
    """

    def __init__(self) -> None:
        self.engine: Engine | None = None

    def state_dict(self) -> dict[str, int]:
        if self.engine is None:
            raise RuntimeError("the checkpoint handler is not attached to an engine")
        return {"epoch": int(self.engine.state.epoch), "iteration": int(self.engine.state.iteration)}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        if self.engine is None:
            raise RuntimeError("the checkpoint handler is not attached to an engine")
        self.engine.state.epoch = int(state["epoch"])
        self.engine.state.iteration = int(state["iteration"])


class _AtomicDiskSaver(DiskSaver):
    """ignite's ``DiskSaver`` (which writes on rank 0 only) with atomic writes through
    :func:`monai_egeunet.utils.atomic_write`, CPU tensors, an optional fixed file name and a provenance record."""

    def __init__(self, dirname: str | os.PathLike, filename: str | None = None, record: Any = None) -> None:
        super().__init__(dirname=dirname, atomic=False, create_dir=True, require_empty=False)
        self.filename = filename
        self.record = record

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        super().__call__(checkpoint, self.filename or filename, metadata)

    def _save_func(self, checkpoint: Mapping, path: Path, func: Any) -> None:
        with atomic_write(path) as f:
            func(_to_cpu(checkpoint), f, **self.kwargs)
        if self.record is not None:
            write_provenance(path, self.record())

    def remove(self, filename: str) -> None:
        # a fixed file is replaced atomically by the next save: deleting it first would leave none after a crash
        if self.filename is not None or idist.get_rank() != self.save_on_rank:
            return
        path = self.dirname / filename
        path.unlink(missing_ok=True)
        provenance_path(path).unlink(missing_ok=True)


class AtomicCheckpointSaver(CheckpointSaver):
    """MONAI's :class:`~monai.handlers.CheckpointSaver` (best model by key metric, final model, every N epochs) with
    atomic writes, CPU tensors, a provenance record beside every file, and what a resumable training needs.

    Added to MONAI's arguments:

    Args:
        interval_filename: a fixed file name for the interval checkpoint (then ``n_saved`` is 1): the file a rerun
            resumes from (see :class:`ResumeCheckpointLoader`). None keeps MONAI's ``{name}_epoch=N.pt`` names.
        progress_key: save the attached engine's epoch and iteration under this key (for resuming a trainer,
            which a bundle config cannot put in its own handler's ``save_dict``); None for none.
        provenance: what to record about the weights in ``NAME.json`` beside each file (dataset, training
            images, bundle version, ...); the saver adds the epoch, how the file was selected (``best
            val_mean_dice=0.9123 at epoch 37``, ``final epoch``, ``every 5 epochs``), the date, the file's SHA-256
            and the package versions. None writes no record.

    Its ``state_dict`` holds the best key-metric score so far and its epoch (``{"best_metric", "best_epoch"}``):
    put the key-metric saver in the interval checkpoint's ``save_dict`` so that a resumed run does not replace a
    better model by a worse one.

    Files are written by rank 0 only (ignite's ``DiskSaver``): in multi-GPU training every rank attaches it.

    Example::

        >>> AtomicCheckpointSaver("models", {"model": net}, save_key_metric=True,  # doctest: +SKIP
        ...                       key_metric_filename="model.pt").attach(evaluator)
    """

    def __init__(
        self,
        save_dir: str,
        save_dict: dict,
        name: str | None = None,
        file_prefix: str = "",
        save_final: bool = False,
        final_filename: str | None = None,
        save_key_metric: bool = False,
        key_metric_name: str | None = None,
        key_metric_n_saved: int = 1,
        key_metric_filename: str | None = None,
        key_metric_save_state: bool = False,
        key_metric_greater_or_equal: bool = False,
        key_metric_negative_sign: bool = False,
        epoch_level: bool = True,
        save_interval: int = 0,
        n_saved: int | None = None,
        interval_filename: str | None = None,
        progress_key: str | None = None,
        provenance: Mapping[str, Any] | None = None,
    ) -> None:
        self._progress = _EngineProgress()
        save_dict = dict(save_dict)
        if progress_key is not None:
            if progress_key in save_dict:
                raise ValueError(f"progress_key {progress_key!r} is also a key of save_dict")
            save_dict[progress_key] = self._progress
        super().__init__(
            save_dir=str(save_dir),
            save_dict=save_dict,
            name=name,
            file_prefix=file_prefix,
            save_final=save_final,
            final_filename=final_filename,
            save_key_metric=save_key_metric,
            key_metric_name=key_metric_name,
            key_metric_n_saved=key_metric_n_saved,
            key_metric_filename=key_metric_filename,
            key_metric_save_state=key_metric_save_state,
            key_metric_greater_or_equal=key_metric_greater_or_equal,
            key_metric_negative_sign=key_metric_negative_sign,
            epoch_level=epoch_level,
            save_interval=save_interval,
            n_saved=1 if interval_filename is not None else n_saved,
        )
        self.provenance = None if provenance is None else dict(provenance)
        self.key_metric_name = key_metric_name
        self.best_metric = -float("inf")
        self.best_epoch = -1
        self._engine: Engine | None = None
        self._selection = ""
        for kind, checkpoint, filename in (
            ("final", self._final_checkpoint, final_filename),
            ("key_metric", self._key_metric_checkpoint, key_metric_filename),
            ("interval", self._interval_checkpoint, interval_filename),
        ):
            if checkpoint is not None:
                record = None if self.provenance is None else partial(self._record, kind)
                checkpoint.save_handler = _AtomicDiskSaver(save_dir, filename, record)

    def attach(self, engine: Engine) -> None:
        self._engine = engine
        self._progress.engine = engine
        super().attach(engine)
        self._restore_engine_best()

    def _restore_engine_best(self) -> None:
        # a MONAI workflow keeps its own best score (state.best_metric), which it logs as "Got new best metric" and
        # reports: after a resume it must start from the restored best too, not from -1
        state = None if self._engine is None else self._engine.state
        if self.best_epoch >= 0 and state is not None and hasattr(state, "best_metric"):
            state.best_metric, state.best_metric_epoch = self.best_metric, self.best_epoch

    def _record(self, kind: str) -> dict[str, Any]:
        state = self._engine.state if self._engine is not None else None
        epoch = int(state.epoch) if state is not None else None
        selection = {
            "final": "final epoch",
            "key_metric": f"best {self._selection} at epoch {epoch}",
            "interval": f"every {self.save_interval} epoch(s)" if self.epoch_level else f"every {self.save_interval} iteration(s)",
        }[kind]
        # no iteration: a best-model saver is attached to the evaluator, whose iterations are not training steps
        return {**(self.provenance or {}), "epochs": epoch, "selection": selection}

    def metrics_completed(self, engine: Engine) -> None:
        name = self.key_metric_name or getattr(engine.state, "key_metric_name", None)
        value = engine.state.metrics.get(name) if name is not None else None
        if isinstance(value, (int, float)):
            self._selection = f"{name}={value:.4f}"
        saved_before = list(self._key_metric_checkpoint._saved) if self._key_metric_checkpoint else []
        super().metrics_completed(engine)
        if self._key_metric_checkpoint is not None and self._key_metric_checkpoint._saved != saved_before:
            self.best_metric, self.best_epoch = float(value), int(engine.state.epoch)
            self.logger.info(f"new best {self._selection} at epoch {self.best_epoch}: saved to {self.save_dir}")

    def exception_raised(self, engine: Engine, e: Exception) -> None:
        # MONAI's saver writes the "final" checkpoint when the run fails: an unfinished model would then pass for
        # the final one. The interval checkpoint is what an interrupted run resumes from.
        raise e

    def state_dict(self) -> dict[str, float]:
        return {"best_metric": self.best_metric, "best_epoch": self.best_epoch}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restores the best score so far (``{"best_metric", "best_epoch"}``) into the key-metric tracking, so that
        the next model saved is one that beats it, and into the state of the MONAI workflow it is attached to
        (``best_metric``, ``best_metric_epoch``)."""
        self.best_metric = float(state_dict["best_metric"])
        self.best_epoch = int(state_dict["best_epoch"])
        if self._key_metric_checkpoint is not None:
            saved = [] if self.best_epoch < 0 else [(self.best_metric, self._key_metric_checkpoint.save_handler.filename
                                                     or "model.pt")]
            self._key_metric_checkpoint.load_state_dict({"_saved": saved})
        self._restore_engine_best()


class ResumeCheckpointLoader(CheckpointLoader):
    """MONAI's :class:`~monai.handlers.CheckpointLoader` for resuming a training: it loads ``load_path`` when the
    engine starts if that file exists (a first run has none and starts from scratch), including the engine's epoch
    and iteration saved by :class:`AtomicCheckpointSaver` under ``progress_key``, so training continues with the
    next epoch. ``max_epochs`` stays the engine's own: a rerun with more epochs trains on.

    Args:
        load_path: the checkpoint written by :class:`AtomicCheckpointSaver` (``interval_filename``).
        load_dict: the objects to restore, as in the saver's ``save_dict``.
        name: logger name; default the engine's logger.
        map_location: where to load tensors.
        strict: passed to ``load_state_dict``.
        progress_key: the key of the engine's epoch and iteration in the checkpoint.

    Raises:
        RuntimeError: when the checkpoint exists but cannot be loaded (the message says to delete it to start
            over), or is at an epoch beyond ``max_epochs``.

    Example::

        >>> ResumeCheckpointLoader("models/checkpoint.pt", {"network": net, "optimizer": opt}).attach(trainer)  # doctest: +SKIP
    """

    def __init__(
        self,
        load_path: str | os.PathLike,
        load_dict: dict,
        name: str | None = None,
        map_location: Any = None,
        strict: bool = True,
        progress_key: str = "trainer",
    ) -> None:
        self._progress = _EngineProgress()
        load_dict = dict(load_dict)
        if progress_key in load_dict:
            raise ValueError(f"progress_key {progress_key!r} is also a key of load_dict")
        load_dict[progress_key] = self._progress
        super().__init__(load_path=str(load_path), load_dict=load_dict, name=name, map_location=map_location,
                         strict=strict)

    def attach(self, engine: Engine) -> None:
        self._progress.engine = engine
        super().attach(engine)

    def __call__(self, engine: Engine) -> None:
        path = Path(self.load_path)
        if not path.is_file():
            self.logger.info(f"no checkpoint at {path}: training starts from the first epoch")
            return
        try:
            super().__call__(engine)
        except Exception as e:
            raise RuntimeError(f"cannot resume from {path}: {e} (or delete {path} to start over)") from e
        self.logger.info(f"resumed from {path} after epoch {engine.state.epoch}")


class WeightsLoader(CheckpointLoader):
    """MONAI's :class:`~monai.handlers.CheckpointLoader` for one network's weights, plus what it lacks here: the
    layouts of other checkpoints (the original EGE-UNet release's ``latest.pth``/``best.pth``, ignite and MONAI
    checkpoints, ``module.`` prefixes: see :func:`monai_egeunet.networks.extract_state_dict`), a missing file named
    with what to do, and a log line saying which weights were loaded and what they were trained on (their
    provenance record), with a warning when that was the synthetic demo set.

    Args:
        load_path: the checkpoint file.
        load_dict: ``{"model": network}``, one network.
        name: logger name; default the engine's logger.
        map_location: where to load tensors.
        strict: passed to ``load_state_dict``.

    Raises:
        FileNotFoundError: when ``load_path`` does not exist.
        ValueError: for more than one object to load, a file that is not a checkpoint, or weights that do not fit.

    Example::

        >>> WeightsLoader("models/model.pt", {"model": net}).attach(evaluator)  # doctest: +SKIP
    """

    def __init__(
        self,
        load_path: str | os.PathLike,
        load_dict: dict,
        name: str | None = None,
        map_location: Any = None,
        strict: bool = True,
    ) -> None:
        if len(load_dict) != 1:
            raise ValueError(f"WeightsLoader loads one network, got load_dict keys {sorted(load_dict)}")
        super().__init__(load_path=str(load_path), load_dict=load_dict, name=name, map_location=map_location,
                         strict=strict)
        self.provenance: dict | None = None

    def __call__(self, engine: Engine | None = None) -> None:
        path = Path(self.load_path)
        if not path.is_file():
            raise FileNotFoundError(
                f"no checkpoint at {path}: train the bundle first, or name a checkpoint with --ckpt_path"
            )
        try:
            checkpoint = torch.load(path, map_location=self.map_location, weights_only=True)
        except Exception as e:
            raise ValueError(f"{path} is not a readable PyTorch checkpoint: {e}") from e
        (key, _), = self.load_dict.items()
        try:
            Checkpoint.load_objects(to_load=self.load_dict, checkpoint={key: extract_state_dict(checkpoint)},
                                    strict=self.strict)
        except RuntimeError as e:
            raise ValueError(f"the weights in {path} do not fit this network: {e}") from e
        self.provenance = read_provenance(path)
        log = self.logger if engine is not None else logger
        log.info(describe_weights(path, self.provenance or {}))
        if self.provenance and self.provenance.get("synthetic_demo"):
            log.warning(
                f"{path} was trained on the bundle's synthetic demo set: its masks of real photographs are poor; "
                f"pass --ckpt_path with weights trained on real images (the shipped ones are bundle/models/model.pt)"
            )
