"""Peak resident memory of the current process, for the benchmark scripts.

Linux keeps a peak mark (``VmHWM``) that ``/proc/self/clear_refs`` value 5 resets, so one part
of a run (a conversion after loading the models) can be measured apart from the rest. Elsewhere
:func:`peak_rss_mb` falls back to ``getrusage`` (the peak since the process started).
"""

from __future__ import annotations

import resource
from pathlib import Path


def reset_peak() -> bool:
    """Reset the peak mark; False where the platform cannot."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak RSS in MiB since the last :func:`reset_peak` (Linux) or since the start."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
