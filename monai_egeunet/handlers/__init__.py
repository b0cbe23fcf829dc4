from __future__ import annotations

from .checkpoint import AtomicCheckpointSaver, ResumeCheckpointLoader, WeightsLoader
from .fuse_network import FuseNetwork
from .inference_report import InferenceReport
from .lesion_measurements import LesionMeasurementsSaver
from .metrics_summary import MetricsSummary
from .overlay_saver import OverlaySaver
from .rank_summary import RankSummary

__all__ = [
    "AtomicCheckpointSaver",
    "FuseNetwork",
    "InferenceReport",
    "LesionMeasurementsSaver",
    "MetricsSummary",
    "OverlaySaver",
    "RankSummary",
    "ResumeCheckpointLoader",
    "WeightsLoader",
]
