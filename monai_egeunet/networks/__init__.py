from __future__ import annotations

from .blocks import GAB, GHPA, ChannelLayerNorm, HadamardAttentionCache
from .nets import EGEUNet, EgeUNet, Egeunet

__all__ = ["EGEUNet", "EgeUNet", "Egeunet", "GAB", "GHPA", "ChannelLayerNorm", "HadamardAttentionCache"]
