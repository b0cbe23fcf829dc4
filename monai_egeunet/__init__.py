"""EGE-UNet for MONAI: the network, and the data, training and export tools of its MONAI Bundle."""

from __future__ import annotations

from .networks import GAB, GHPA, EGEUNet, FusedEGEUNet, fuse_for_inference
from .version import __version__

__all__ = ["EGEUNet", "FusedEGEUNet", "GAB", "GHPA", "__version__", "fuse_for_inference"]
