from __future__ import annotations

from .checkpoint import BestModelSaver, ResumableCheckpoint, WeightsLoader, save_atomic
from .metrics_summary import MetricsSummary

__all__ = ["MetricsSummary", "BestModelSaver", "ResumableCheckpoint", "WeightsLoader", "save_atomic"]
