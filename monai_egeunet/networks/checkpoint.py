"""Loading EGE-UNet weights from this bundle's files, MONAI/ignite checkpoints and the original release's."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["load_weights", "extract_state_dict", "unwrap"]

#: keys under which checkpoints nest the network's weights: the original release's ``latest.pth``, ignite, MONAI
_NESTING_KEYS = ("model_state_dict", "state_dict", "model", "network", "net")


def unwrap(network: nn.Module) -> nn.Module:
    """The network inside a ``DataParallel``/``DistributedDataParallel`` wrapper (or the network itself)."""
    return network.module if isinstance(network, (nn.DataParallel, nn.parallel.DistributedDataParallel)) else network


def extract_state_dict(checkpoint: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The network's state dict from a checkpoint, whatever wraps it.

    Handles a plain state dict, one nested under ``model_state_dict`` (the original release's ``latest.pth``),
    ``state_dict``, ``model``, ``network`` or ``net``, and the ``module.`` prefix of (Distributed)DataParallel.

    Args:
        checkpoint: the loaded checkpoint.

    Returns:
        The state dict.

    Raises:
        ValueError: when no tensors are found.
    """
    state: Any = checkpoint
    while isinstance(state, Mapping) and not any(isinstance(v, torch.Tensor) for v in state.values()):
        key = next((k for k in _NESTING_KEYS if k in state), None)
        if key is None:
            raise ValueError(f"no network weights in the checkpoint (keys: {sorted(state)[:10]})")
        state = state[key]
    if not isinstance(state, Mapping):
        raise ValueError(f"the checkpoint holds a {type(state).__name__}, not a state dict")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def load_weights(
    network: nn.Module, path: str | os.PathLike, map_location: Any = "cpu", strict: bool = True
) -> nn.Module:
    """Loads a checkpoint file into ``network`` (see :func:`extract_state_dict` for the formats).

    Args:
        network: the network (a DDP wrapper is unwrapped).
        path: the checkpoint file.
        map_location: passed to ``torch.load``.
        strict: passed to ``load_state_dict``.

    Returns:
        The network.

    Raises:
        FileNotFoundError: when ``path`` does not exist (the message says how to get weights).
        ValueError: when the file is not a checkpoint or its weights do not fit the network.

    Example::

        >>> net = load_weights(EGEUNet(), "models/model.pt")  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no checkpoint at {path}: train the bundle first, or name a checkpoint with --ckpt_path"
        )
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise ValueError(f"{path} is not a readable PyTorch checkpoint: {e}") from e
    state = extract_state_dict(checkpoint)
    try:
        unwrap(network).load_state_dict(state, strict=strict)
    except RuntimeError as e:
        raise ValueError(f"the weights in {path} do not fit this network: {e}") from e
    return network
