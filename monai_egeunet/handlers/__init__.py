from __future__ import annotations

from .checkpoint import BestModelSaver, FinalModelSaver, ResumableCheckpoint, WeightsLoader, save_atomic
from .metrics_summary import MetricsSummary

__all__ = ["MetricsSummary", "BestModelSaver", "FinalModelSaver", "ResumableCheckpoint", "WeightsLoader", "save_atomic"]
