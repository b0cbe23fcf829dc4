from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from ignite.engine import Engine, Events

from monai_egeunet.data.datalist import write_json_atomic

__all__ = ["MetricsSummary"]


class MetricsSummary:
    """Writes an evaluator's final metrics, with the checkpoint and data they came from, to a JSON file.

    MONAI's ``MetricsSaver`` writes the CSV files (per-image details); this adds the one machine-readable summary
    that a results table or ``metadata.json``'s ``eval_metrics`` is filled from.

    Args:
        output_path: the JSON file.
        extra: fields to record beside the metrics (checkpoint path, dataset, intensity scaling...): mappings (the
            weights' provenance record, the inference options) as JSON objects, None as null, anything else as a
            string.

    Example::

        >>> MetricsSummary("eval/metrics.json", extra={"ckpt_path": "models/model.pt"}).attach(evaluator)  # doctest: +SKIP
    """

    def __init__(self, output_path: str | os.PathLike, extra: dict | None = None) -> None:
        self.output_path = Path(output_path)
        self.extra = dict(extra or {})

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        metrics = {k: float(v) for k, v in engine.state.metrics.items() if isinstance(v, (int, float))}
        n = len(engine.data_loader.dataset) if hasattr(engine.data_loader, "dataset") else None
        extra = {k: json.loads(json.dumps(v, default=str)) if isinstance(v, Mapping) or v is None else str(v)
                 for k, v in self.extra.items()}
        write_json_atomic(self.output_path, {"metrics": metrics, "num_images": n, **extra})
