from __future__ import annotations

from .gab import GAB
from .ghpa import GHPA, HadamardAttentionCache
from .layernorm import ChannelLayerNorm, channel_layer_norm

__all__ = ["GAB", "GHPA", "ChannelLayerNorm", "HadamardAttentionCache", "channel_layer_norm"]
