"""Class-count profiles and per-class selection of training samples.

Long tail (the paper, and the public code's ``make_longtailed_imb``)::

    n_i = floor(n_max * rho ** (-i / (C - 1)))        i = 0 .. C-1

Step (LDAM-DRW): the first ``C - round(C * fraction)`` classes keep ``n_max``, the rest get
``floor(n_max / rho)``.

Both are computed exactly (integer and rational arithmetic), so every processor gives the same counts.
The public code computes ``int(n_max * mu ** i)`` with ``mu = (1 / rho) ** (1 / (C - 1))`` in floating
point, whose last digits depend on the processor's math library: for CIFAR-100-LT (n_max 500, rho 100)
the last class is ``500 * mu ** 99``, exactly 5, which numpy gives as 4.9999999999999... on a CPU with
AVX-512 (int() -> 4, 10,846 images in all) and as 5.000000000000025 on one without (5, 10,847).  The
exact value is 5 and 10,847 images, the count LDAM-DRW and most later papers report.  CIFAR-LT-10's
counts (5000 ... 50, 12,406) are the same either way.
"""

from __future__ import annotations

from fractions import Fraction
from typing import List, Sequence

import numpy as np
import torch


def exact_power_floor(n_max: int, ratio: float, i: int, n: int) -> int:
    """floor(n_max * ratio ** (-i / n)), exactly: the largest integer k with k**n * ratio**i <= n_max**n.

    ``ratio`` is taken as the exact rational value of the float given, so the answer does not depend on
    rounding in a math library (see the module docstring for where the floating-point form differs).
    """
    r = Fraction(ratio)
    bound = Fraction(n_max) ** n
    k = int(n_max * float(r) ** (-i / n))  # a guess within one or two of the answer; corrected exactly below
    k = max(k, 0)
    while k > 0 and Fraction(k) ** n * r**i > bound:
        k -= 1
    while Fraction(k + 1) ** n * r**i <= bound:
        k += 1
    return k


def longtail_counts(n_max: int, num_classes: int, ratio: float) -> List[int]:
    """n_i = floor(n_max * ratio ** (-i / (C - 1))) for i = 0 .. C-1, computed exactly."""
    if num_classes == 1:
        return [int(n_max)]
    return [exact_power_floor(int(n_max), ratio, i, num_classes - 1) for i in range(num_classes)]


def step_counts(n_max: int, num_classes: int, ratio: float, minor_fraction: float = 0.5) -> List[int]:
    """The first C - round(C * fraction) classes keep n_max, the rest floor(n_max / ratio) (exact)."""
    n_minor = int(round(num_classes * minor_fraction))
    n_major = num_classes - n_minor
    return [int(n_max)] * n_major + [exact_power_floor(int(n_max), ratio, 1, 1)] * n_minor


def class_counts(profile: str, n_max: int, num_classes: int, ratio: float, minor_fraction: float = 0.5) -> List[int]:
    """Target training count per class for ``profile`` in {longtail, step}."""
    if ratio < 1:
        raise ValueError(f"data.ratio={ratio} must be >= 1 (N_max / N_min).")
    if n_max < 1:
        raise ValueError(f"data.n_max={n_max} must be >= 1.")
    if profile == "longtail":
        counts = longtail_counts(n_max, num_classes, ratio)
    elif profile == "step":
        counts = step_counts(n_max, num_classes, ratio, minor_fraction)
    else:
        raise ValueError(f"data.profile='{profile}' has no count formula; use longtail or step.")
    if min(counts) < 1:
        raise ValueError(
            f"data.ratio={ratio} with n_max={n_max} leaves a class with {min(counts)} training samples; "
            f"lower data.ratio to at most {n_max} or raise data.n_max."
        )
    return counts


def select_per_class(labels: np.ndarray, counts: Sequence[int], selection: str = "first", seed: int = 0) -> np.ndarray:
    """Indices of ``counts[c]`` samples of each class c.

    ``first`` keeps the first n_c of each class in file order (the paper); ``random`` draws them
    with a seeded generator.  The result is sorted, so it is in file order either way.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    chosen = []
    for c, n in enumerate(counts):
        idx = np.flatnonzero(labels == c)
        if len(idx) < n:
            raise ValueError(
                f"class {c} has {len(idx)} samples but the profile asks for {n}; lower data.n_max or data.ratio."
            )
        if selection == "random":
            idx = np.sort(rng.choice(idx, size=n, replace=False))
        elif selection != "first":
            raise ValueError(f"data.selection='{selection}' is not allowed; use first or random.")
        chosen.append(idx[:n])
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


def hold_out_per_class(labels: np.ndarray, per_class: Sequence[int] | int) -> tuple:
    """Split indices into (held_out, rest): the first ``per_class`` of each class in file order."""
    labels = np.asarray(labels)
    num_classes = int(labels.max()) + 1 if len(labels) else 0
    if isinstance(per_class, (int, np.integer)):
        per_class = [int(per_class)] * num_classes
    taken = np.zeros(num_classes, dtype=np.int64)
    held, rest = [], []
    for i, y in enumerate(labels):
        if taken[y] < per_class[y]:
            held.append(i)
            taken[y] += 1
        else:
            rest.append(i)
    short = [c for c in range(num_classes) if taken[c] < per_class[c]]
    if short:
        c = short[0]
        raise ValueError(f"class {c} has only {taken[c]} samples to hold out, {per_class[c]} asked for.")
    return np.asarray(held, dtype=np.int64), np.asarray(rest, dtype=np.int64)


def counts_of(labels: torch.Tensor | np.ndarray, num_classes: int) -> List[int]:
    labels = torch.as_tensor(np.asarray(labels) if not torch.is_tensor(labels) else labels)
    return torch.bincount(labels.long().cpu(), minlength=num_classes).tolist()
