"""Data tools of the EGE-UNet bundle: a photo reader, dataset layouts, splits, pre-flight checks, and the synthetic
demo set."""

from __future__ import annotations

from .datalist import DatasetError, check_pairs, find_pairs, load_split_ids, prepare_datalists, write_json_atomic
from .image_reader import PhotoReader, swap_spatial_axes
from .synthetic import SYNTHETIC_VERSION, default_synthetic_dir, make_synthetic_dataset

__all__ = [
    "SYNTHETIC_VERSION",
    "DatasetError",
    "PhotoReader",
    "check_pairs",
    "default_synthetic_dir",
    "find_pairs",
    "load_split_ids",
    "make_synthetic_dataset",
    "prepare_datalists",
    "swap_spatial_axes",
    "write_json_atomic",
]
