from __future__ import annotations

import logging
from collections.abc import Callable

from ignite.engine import Engine, Events
from torch import nn

from monai_egeunet.networks.checkpoint import unwrap

__all__ = ["FuseNetwork"]

logger = logging.getLogger(__name__)


class FuseNetwork:
    """Runs an evaluator with the inference form of its network (:func:`monai_egeunet.networks.fuse_for_inference`):
    the same function, with what depends only on the weights computed once.

    The step is taken when the engine starts, after the weights are loaded (attach it after the
    :class:`~monai_egeunet.handlers.WeightsLoader`): the engine's network is replaced by the inference form built from
    it, and put back when the run completes. The network object itself is not changed, so exports and training use
    the plain network.

    Args:
        fuse_fn: builds the inference form from the network; default ``fuse_for_inference``.

    Raises:
        TypeError: (when the engine starts) for a network that has no inference form, e.g. another architecture or
            an ONNX Runtime model; run with ``fuse_network`` false then.

    Example::

        >>> FuseNetwork().attach(evaluator)  # doctest: +SKIP
    """

    def __init__(self, fuse_fn: Callable[[nn.Module], nn.Module] | None = None) -> None:
        if fuse_fn is None:
            from monai_egeunet.networks import fuse_for_inference

            fuse_fn = fuse_for_inference
        self.fuse_fn = fuse_fn
        self.plain: nn.Module | None = None
        self.fused: nn.Module | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.fuse)
        engine.add_event_handler(Events.COMPLETED, self.restore)

    def fuse(self, engine: Engine) -> None:
        if self.fused is None or engine.network is not self.fused:  # type: ignore[attr-defined]
            self.plain = engine.network  # type: ignore[attr-defined]
        plain = unwrap(self.plain)
        try:
            self.fused = self.fuse_fn(plain)
        except TypeError as e:
            raise TypeError(f"{e} (run with --fuse_network false to use the network as it is)") from e
        engine.network = self.fused  # type: ignore[attr-defined]
        logger.info(f"running the inference form of {type(plain).__name__} ({type(self.fused).__name__})")

    def restore(self, engine: Engine) -> None:
        if self.plain is not None:
            engine.network = self.plain  # type: ignore[attr-defined]
