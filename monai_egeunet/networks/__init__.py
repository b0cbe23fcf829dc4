from __future__ import annotations

from .blocks import GAB, GHPA, ChannelLayerNorm
from .checkpoint import extract_state_dict, load_weights, unwrap
from .nets import EGEUNet, EgeUNet, Egeunet, FusedEGEUNet, fuse_for_inference

__all__ = [
    "EGEUNet",
    "EgeUNet",
    "Egeunet",
    "FusedEGEUNet",
    "GAB",
    "GHPA",
    "ChannelLayerNorm",
    "extract_state_dict",
    "fuse_for_inference",
    "load_weights",
    "unwrap",
]
