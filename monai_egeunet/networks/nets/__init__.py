from __future__ import annotations

from .egeunet import EGEUNet, EgeUNet, Egeunet

__all__ = ["EGEUNet", "EgeUNet", "Egeunet"]
