"""Peak resident memory of the benchmark's own process from a starting point, shared by the benchmark scripts."""

from __future__ import annotations

import resource
from pathlib import Path
from typing import Callable


def _rss_kb() -> tuple[int, int]:
    """(current, peak) resident set size in kB (Linux /proc)."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def start_peak_tracking() -> tuple[int, Callable[[], int]]:
    """Resets the peak (VmHWM) to the current resident set, so that what came before (imports, model building) no
    longer counts. Returns the resident set now and a function giving the peak since, both in kB; without /proc
    (or when not allowed) the process-lifetime peak, which may hide small increases."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _rss_kb()[0], lambda: _rss_kb()[1]
    except OSError:
        return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
