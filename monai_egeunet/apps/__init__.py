"""Ready-made datasets for the bundle, in the style of :mod:`monai.apps`."""

from __future__ import annotations

from .datasets import ISICDataset, PH2Dataset, extract_archive

__all__ = ["ISICDataset", "PH2Dataset", "extract_archive"]
