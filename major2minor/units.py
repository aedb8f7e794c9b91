"""How numbers are shown to people: durations and percentages, one format everywhere."""

from __future__ import annotations


def duration(seconds: float) -> str:
    """``42.0s``, ``3.5 min``, ``2.1 h``, ``1.5 days``."""
    seconds = max(float(seconds), 0.0)
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
