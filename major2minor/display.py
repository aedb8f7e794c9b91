"""Display formatting: how numbers are shown to people (durations and percentages), one format everywhere.

Files for programs (``summary.json``, ``log.csv``) hold fractions (0.784); everything shown to people
(the terminal, ``m2m report``, figures) shows percent (78.40%), with two decimals, or more significant
digits below 1% so that a small acceptance rate does not read as zero (0.38%).
"""

from __future__ import annotations

from typing import Callable

#: where a message for people goes (``print``, a list's ``append``, a logger's ``info``); one line per call
Log = Callable[[str], None]


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


def percent(fraction) -> str:
    """``0.784 -> '78.40%'``, ``0.0038 -> '0.38%'``, ``0.00004 -> '0.004%'``; None -> ``'n/a'``."""
    if fraction is None or fraction != fraction:
        return "n/a"
    value = 100.0 * float(fraction)
    if value == 0 or abs(value) >= 1:
        return f"{value:.2f}%"
    return f"{value:.2g}%"
