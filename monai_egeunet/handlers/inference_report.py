from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events

from monai_egeunet.inference import FAILED_KEY, InferenceInputs
from monai_egeunet.provenance import read_provenance
from monai_egeunet.utils import atomic_write

__all__ = ["InferenceReport"]

logger = logging.getLogger(__name__)


class InferenceReport:
    """Says at the end of an inference run which masks were written where, which inputs failed and why, and which
    weights made the masks.

    Attached to the evaluator, it notes after each iteration the masks on disk and the inputs that could not be read
    (the failure items of :class:`monai_egeunet.inference.SkipFailuresDataset`); when the run completes it logs a
    summary and writes it as JSON to ``report_file`` (``written``, ``failed``, ``weights`` with their provenance
    record). :meth:`finish`, the last step of the bundle's ``run``, ends the process with status 1 when an input
    failed, after all the others were written.

    Args:
        inputs: the run's inputs (their mask names, and the empty files left out).
        fail_on_error: make :meth:`finish` exit with status 1 when an input failed.
        report_file: the JSON summary's path; None to write none.
        weights: the weights file the network was loaded from (recorded with its provenance), if any.

    Example::

        >>> report = InferenceReport(InferenceInputs("photos", "masks"), report_file="masks/report.json")  # doctest: +SKIP
        >>> report.attach(evaluator)
    """

    def __init__(
        self,
        inputs: InferenceInputs,
        fail_on_error: bool = True,
        report_file: str | os.PathLike | None = None,
        weights: str | os.PathLike | None = None,
    ) -> None:
        self.inputs = inputs
        self.fail_on_error = fail_on_error
        self.report_file = None if report_file is None else Path(report_file)
        self.weights = weights
        self.failed: dict[str, str] = {}
        self.written: list[str] = []
        self._summarized = False

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.record)
        engine.add_event_handler(Events.COMPLETED, self.summarize)

    def record(self, engine: Engine) -> None:
        """Notes the failed inputs and the masks on disk of the current iteration (after the postprocessing that
        writes them)."""
        output = engine.state.output
        if isinstance(output, dict) and FAILED_KEY in output:
            self.failed.update({Path(p).name: why for p, why in output[FAILED_KEY].items()})
            return
        for item in output if isinstance(output, list) else []:
            image = item.get("image") if isinstance(item, dict) else None
            name = getattr(image, "meta", {}).get("filename_or_obj")
            if name is not None and self.inputs.mask_path(name).is_file():
                self.written.append(str(name))

    def summary(self) -> dict[str, Any]:
        """What was written and what failed, as the JSON report holds it."""
        failed = {**self.inputs.failed, **self.failed}
        done = set(self.written)
        for item in self.inputs.datalist:
            name = Path(item["image"]).name
            if item["image"] not in done and name not in failed:
                failed[name] = "no mask was written (see the log above)"
        weights = None
        if self.weights is not None:
            weights = {"path": str(self.weights), "provenance": read_provenance(self.weights)}
        return {
            "dataset_dir": str(self.inputs.dataset_dir),
            "output_dir": str(self.inputs.output_dir),
            "weights": weights,
            "written": [str(self.inputs.mask_path(i)) for i in self.written],
            "failed": failed,
        }

    def summarize(self, engine: Engine | None = None) -> dict[str, Any]:
        """Logs (once) and saves the summary; returns it."""
        summary = self.summary()
        if not self._summarized:
            self._summarized = True
            n, failed = len(summary["written"]), summary["failed"]
            pattern = self.inputs.mask_path("*").name
            logger.info(f"wrote {n} mask(s) ({pattern}) to {self.inputs.output_dir}")
            if failed:
                details = "; ".join(f"{name}: {why}" for name, why in failed.items())
                logger.warning(f"{len(failed)} input(s) failed and have no mask: {details}")
            if self.report_file is not None:
                with atomic_write(self.report_file, "w") as f:
                    json.dump(summary, f, indent=1)
        return summary

    def finish(self) -> None:
        """Logs the summary if the evaluator did not (nothing to segment), then exits with status 1 when an input
        failed and ``fail_on_error`` is set.

        Raises:
            SystemExit: naming the failed inputs.
        """
        summary = self.summarize()
        if summary["failed"] and self.fail_on_error:
            raise SystemExit(
                f"inference: {len(summary['failed'])} input(s) failed: {', '.join(summary['failed'])} "
                f"({len(summary['written'])} mask(s) written to {self.inputs.output_dir})"
            )
