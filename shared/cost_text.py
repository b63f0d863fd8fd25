"""How a cost estimate's numbers read, in one place for the CLI's ``--estimate`` summary
(``backend.cost.estimate``) and the Blender panel's estimate lines (``blender_addon.estimate``).

Plain Python, no torch: the add-on bundles ``shared/``.
"""

from __future__ import annotations

GIB = 2**30              # the cost model's "GB" (backend.cost.model.GB)


def duration_text(seconds: float) -> str:
    """Seconds under a minute and a half (rounded: 89.6 s reads as 1.5 min, never "90 s"), then
    minutes up to an hour and a half, then hours."""
    if seconds < 89.5:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def gigabytes_text(n_bytes: float) -> str:
    """A size in GB without the unit: one decimal below 10 GB, none above."""
    return f"{n_bytes / GIB:.1f}" if n_bytes < 10 * GIB else f"{n_bytes / GIB:.0f}"
