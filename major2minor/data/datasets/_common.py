"""Helpers shared by the data-set modules: the training profile, per-class hold-outs, split assembly."""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from major2minor.data.core import Split
from major2minor.data.profiles import class_counts, select_per_class


def feasible_n_max(available: Sequence[int], profile: str, ratio: float, minor_fraction: float) -> int:
    """The largest n_max whose profile counts fit in ``available`` (0 when none does)."""
    available = np.asarray(available)
    lo, hi = 0, int(available.max()) if len(available) else 0
    while lo < hi:  # counts grow monotonically with n_max: binary search
        mid = (lo + hi + 1) // 2
        try:
            ok = bool(
                np.all(np.asarray(class_counts(profile, mid, len(available), ratio, minor_fraction)) <= available)
            )
        except ValueError:  # some class would get 0 samples at this n_max
            ok = False
        if ok:
            lo = mid
        else:
            hi = mid - 1
    return lo


def select_train(
    labels: np.ndarray,
    num_classes: int,
    cfg,
    seed: int,
    dataset: str,
    default_n_max: Optional[int] = None,
    class_names: Optional[List[str]] = None,
) -> np.ndarray:
    """Indices (into ``labels``) of the training samples the profile keeps, in file order.

    ``natural`` keeps everything.  ``longtail``/``step`` keep n_i samples of class i (first in file
    order, or a seeded draw with ``data.selection=random``); n_max is ``data.n_max``, else
    ``default_n_max``, else the largest value the data allow.
    """
    labels = np.asarray(labels)
    if cfg.profile == "natural":
        return np.arange(len(labels))
    available = np.bincount(labels, minlength=num_classes)
    fit = feasible_n_max(available, cfg.profile, cfg.ratio, cfg.step_minor_fraction)
    n_max = cfg.n_max or default_n_max or fit
    if n_max < 1:
        raise ValueError(
            f"data.profile={cfg.profile} with data.ratio={cfg.ratio} does not fit {dataset}'s "
            f"training counts (smallest class: {int(available.min())}); lower data.ratio or "
            "use data.profile=natural."
        )
    counts = class_counts(cfg.profile, n_max, num_classes, cfg.ratio, cfg.step_minor_fraction)
    short = [c for c in range(num_classes) if counts[c] > available[c]]
    if short:
        c = short[0]
        name = f" ({class_names[c]})" if class_names else ""
        raise ValueError(
            f"data.n_max={n_max} with data.profile={cfg.profile}, data.ratio={cfg.ratio} asks {dataset} class "
            f"{c}{name} for {counts[c]} training samples but only {int(available[c])} are available; "
            + (
                f"lower data.n_max (at most {fit} fits) or data.ratio, or use data.profile=natural."
                if fit
                else f"no data.n_max fits data.ratio={cfg.ratio} with these counts (max {int(available.max())} "
                "a class); lower data.ratio, or use data.profile=natural."
            )
        )
    return select_per_class(labels, counts, cfg.selection, seed)


def first_per_class(labels: np.ndarray, per_class: Sequence[int] | int, num_classes: int) -> tuple:
    """(held, rest): the first ``per_class[c]`` samples of each class c in file order, and the others."""
    labels = np.asarray(labels)
    if isinstance(per_class, (int, np.integer)):
        per_class = [int(per_class)] * num_classes
    per_class = np.asarray(per_class)
    held = np.zeros(len(labels), dtype=bool)
    for c in range(num_classes):
        idx = np.flatnonzero(labels == c)
        held[idx[: per_class[c]]] = True
    return np.flatnonzero(held), np.flatnonzero(~held)


def fraction_per_class(labels: np.ndarray, fraction: float, num_classes: int) -> List[int]:
    """round(fraction * n_c) per class, never taking a class's last sample."""
    counts = np.bincount(np.asarray(labels), minlength=num_classes)
    return [int(min(round(fraction * n), max(n - 1, 0))) for n in counts]


def stratified_holdout(labels: np.ndarray, fraction: float, num_classes: int, seed: int) -> tuple:
    """(held, rest), sorted: a seeded draw of round(fraction * n_c) samples of every class c."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    sizes = fraction_per_class(labels, fraction, num_classes)
    held = np.zeros(len(labels), dtype=bool)
    for c in range(num_classes):
        idx = np.flatnonzero(labels == c)
        held[rng.permutation(idx)[: sizes[c]]] = True
    return np.flatnonzero(held), np.flatnonzero(~held)


def split_of(x: np.ndarray, y: np.ndarray, idx: Optional[np.ndarray] = None) -> Split:
    if idx is not None:
        x, y = x[idx], y[idx]
    return Split(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.asarray(y, dtype=np.int64)))


def indices_info(**splits: np.ndarray) -> Dict[str, List[int]]:
    """Source indices per split for the manifest (positions in the data set's own files / lists)."""
    return {k: [int(i) for i in v] for k, v in splits.items()}


def check_positive(value: Optional[int], key: str) -> None:
    if value is not None and value < 0:
        raise ValueError(f"{key}={value} must be >= 0.")


# ----------------------------------------------------------------------------------------------
# user data (folder / csv / npz): one rule for held-out splits

USER_VAL_FRACTION = 0.1
USER_TEST_FRACTION = 0.2


def user_holdout(
    labels: np.ndarray, cfg, num_classes: int, need_val: bool, need_test: bool, dataset: str, class_names: Sequence[str]
) -> tuple:
    """(pool, val, test) index arrays into ``labels`` for user data without separate val/test files.

    Per class, in file order: the first ``data.test_per_class`` samples (else round(20%) of the class)
    are test, the next ``data.val_per_class`` (else round(10%)) validation, the rest the training
    pool.  A split given as its own file is not held out (``need_val`` / ``need_test`` False).
    """
    labels = np.asarray(labels)
    counts = np.bincount(labels, minlength=num_classes)
    empty = np.zeros(0, dtype=np.int64)

    def sizes(per_class: Optional[int], fraction: float, key: str, n: np.ndarray) -> List[int]:
        check_positive(per_class, key)
        if per_class is not None:
            return [int(per_class)] * num_classes
        return fraction_per_class(np.repeat(np.arange(num_classes), n), fraction, num_classes)

    none = [0] * num_classes
    test_sizes = sizes(cfg.test_per_class, USER_TEST_FRACTION, "data.test_per_class", counts) if need_test else none
    val_sizes = sizes(cfg.val_per_class, USER_VAL_FRACTION, "data.val_per_class", counts) if need_val else none
    for c in range(num_classes):
        if counts[c] - test_sizes[c] - val_sizes[c] < 1:
            raise ValueError(
                f"{dataset}: class {c} ({class_names[c]}) has {counts[c]} samples; holding out {test_sizes[c]} test "
                f"and {val_sizes[c]} validation leaves none for training. Lower data.test_per_class / "
                "data.val_per_class, or give separate validation/test files."
            )
    test_idx, rest = first_per_class(labels, test_sizes, num_classes) if need_test else (empty, np.arange(len(labels)))
    if need_val:
        v, p = first_per_class(labels[rest], val_sizes, num_classes)
        val_idx, pool = rest[v], rest[p]
    else:
        val_idx, pool = empty, rest
    return pool, val_idx, test_idx


def label_index(values: Sequence, source: str) -> tuple:
    """(class names, mapping value -> class id): sorted numerically when every label is an integer."""
    uniq = sorted(set(values), key=str)
    try:
        as_int = {v: int(str(v)) for v in uniq}
        if all(str(as_int[v]) == str(v).strip() for v in uniq):
            uniq = sorted(uniq, key=lambda v: as_int[v])
    except ValueError:
        pass
    if len(uniq) < 2:
        raise ValueError(f"{source}: found {len(uniq)} distinct label(s); a classification data set needs at least 2.")
    return [str(v) for v in uniq], {v: i for i, v in enumerate(uniq)}


def feature_normalisation(x_train: np.ndarray) -> tuple:
    """(bounds, mean, std) for feature vectors: [0, 1] bounds and no normalisation when every training
    value lies in [0, 1]; else no bounds and the training split's per-feature mean/std (std 0 -> 1)."""
    if x_train.size and float(x_train.min()) >= 0.0 and float(x_train.max()) <= 1.0:
        return (0.0, 1.0), None, None
    mean = x_train.mean(0).astype(np.float64)
    std = x_train.std(0).astype(np.float64)
    std[std < 1e-8] = 1.0
    return None, tuple(float(m) for m in mean), tuple(float(s) for s in std)
