from __future__ import annotations

from .egeunet import EGEUNet, EgeUNet, Egeunet
from .fused import FusedEGEUNet, fuse_for_inference

__all__ = ["EGEUNet", "EgeUNet", "Egeunet", "FusedEGEUNet", "fuse_for_inference"]
