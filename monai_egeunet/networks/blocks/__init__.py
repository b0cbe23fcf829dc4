from __future__ import annotations

from .gab import GAB
from .ghpa import GHPA
from .layernorm import ChannelLayerNorm, channel_layer_norm, channel_layer_norm_across_planes

__all__ = ["GAB", "GHPA", "ChannelLayerNorm", "channel_layer_norm", "channel_layer_norm_across_planes"]
