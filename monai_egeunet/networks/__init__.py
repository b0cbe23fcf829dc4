from __future__ import annotations

from .blocks import GAB, GHPA, ChannelLayerNorm, HadamardAttentionCache
from .checkpoint import extract_state_dict, load_weights, unwrap
from .nets import EGEUNet, EgeUNet, Egeunet

__all__ = ["EGEUNet", "EgeUNet", "Egeunet", "GAB", "GHPA", "ChannelLayerNorm", "HadamardAttentionCache", "extract_state_dict", "load_weights", "unwrap"]
