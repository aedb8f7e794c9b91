"""``digits-lt``: scikit-learn's bundled 8x8 handwritten digits, made long-tailed.

No download: the 1,797 images ship with scikit-learn.  In file order, the first
``test_per_class`` (default 50) images of every class form the balanced test split, the next
``val_per_class`` (default 30) the validation split; from the rest, class i keeps its first n_i
images (``selection=first``) or a seeded draw (``selection=random``), with
n_i = int(n_max * mu**i) for the long-tail profile.  Pixels (0..16) are stored as uint8 0..255.
"""

from __future__ import annotations

import numpy as np
import torch

from major2minor.data.core import Augment, DataBundle, Split
from major2minor.data.profiles import class_counts, hold_out_per_class, select_per_class
from major2minor.registry import DATASETS

DEFAULT_TEST, DEFAULT_VAL, DEFAULT_N_MAX = 50, 30, 90


def _subset(x: np.ndarray, y: np.ndarray, idx: np.ndarray) -> Split:
    return Split(torch.from_numpy(x[idx]), torch.from_numpy(y[idx]).long())


@DATASETS.register("digits-lt")
def build_digits_lt(cfg, seed: int = 0) -> DataBundle:
    """scikit-learn's 8x8 digits (embedded, no download), long-tailed training split."""
    from sklearn.datasets import load_digits

    raw = load_digits()
    x = np.rint(raw.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # (N, 1, 8, 8)
    y = raw.target.astype(np.int64)
    n_test = cfg.test_per_class if cfg.test_per_class is not None else DEFAULT_TEST
    n_val = cfg.val_per_class if cfg.val_per_class is not None else DEFAULT_VAL
    test_idx, rest = hold_out_per_class(y, n_test)
    val_local, pool = hold_out_per_class(y[rest], n_val)
    val_idx, pool_idx = rest[val_local], rest[pool]
    available = np.bincount(y[pool_idx], minlength=10)
    if cfg.profile == "natural":
        train_idx = pool_idx
    else:
        n_max = cfg.n_max or DEFAULT_N_MAX
        if n_max > available.min():
            raise ValueError(
                f"data.n_max={n_max} is more than digits-lt can give every class "
                f"({available.min()} after holding out {n_test} test and {n_val} "
                "validation images per class); lower data.n_max."
            )
        counts = class_counts(cfg.profile, n_max, 10, cfg.ratio, cfg.step_minor_fraction)
        train_idx = pool_idx[select_per_class(y[pool_idx], counts, cfg.selection, seed)]
    return DataBundle(
        name="digits-lt",
        train=_subset(x, y, train_idx),
        val=_subset(x, y, val_idx),
        test=_subset(x, y, test_idx),
        num_classes=10,
        class_names=[str(i) for i in range(10)],
        bounds=(0.0, 1.0),
        mean=(0.3053,),
        std=(0.3760,),  # pixel mean/std of the whole set
        augment=Augment(crop_padding=1, flip=False) if cfg.augment else Augment(),
        info={"source": "sklearn.datasets.load_digits", "profile": cfg.profile, "ratio": cfg.ratio},
    )
