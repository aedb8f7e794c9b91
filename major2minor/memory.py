"""How much memory the machine has, and a refusal naming the setting when a planned allocation cannot fit.

An allocation larger than the machine's memory fails deep inside numpy or torch ("DefaultCPUAllocator:
can't allocate memory: you tried to allocate 360000000000 bytes", or a ``MemoryError`` traceback), naming
no setting; with memory over-commit it may instead start, swap and be killed.  The callers estimate what
they will allocate from the configuration first and call :func:`require`, which refuses with the setting
that drives the size.  Estimates leave out what they cannot know (allocator overhead, other processes), so
they are low: a refusal means the run could never fit, and nothing that fits is refused.
"""

from __future__ import annotations

import os
from typing import Optional, Tuple

import torch


class MemoryEstimateError(ValueError):
    """A planned allocation that cannot fit in the machine's (or the GPU's) memory."""


def size_text(nbytes: float) -> str:
    """``1.09 TiB``, ``512.0 MiB``, ``800 B``."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.3g} {unit}"
    return f"{int(nbytes)} B"


def machine_memory(device: Optional[torch.device] = None) -> Optional[Tuple[int, str]]:
    """``(bytes, what)``: the GPU's memory for a CUDA device, else the machine's physical memory; None where
    it cannot be read (then nothing is refused)."""
    if device is not None and device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return int(props.total_memory), f"the {props.name}'s memory"
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not a POSIX system (Windows): no check
        return None
    return (int(total), "this machine's memory") if total > 0 else None


def require(nbytes: float, what: str, fix: str, device: Optional[torch.device] = None) -> None:
    """Refuse ``what`` (e.g. "decoding 40 images at 100000x100000 pixels") when its ``nbytes`` exceed the memory
    of ``device`` (the machine for the CPU), saying so with ``fix`` (the setting to lower, and its value)."""
    have = machine_memory(device)
    if have is not None and nbytes > have[0]:
        raise MemoryEstimateError(
            f"{what} needs about {size_text(nbytes)}, more than {have[1]} ({size_text(have[0])}); {fix}."
        )


__all__ = ["MemoryEstimateError", "machine_memory", "require", "size_text"]
