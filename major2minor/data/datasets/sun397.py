"""``sun397``: the SUN397 scene folder tree, naturally imbalanced, at 32x32.

``data.root`` is the extracted ``SUN397/`` folder (or its parent): ``a/abbey/sun_*.jpg``,
``b/bakery/shop/sun_*.jpg``, ...  Every folder that directly holds images is one class, named by
its path relative to the root (``a/abbey``); classes are sorted by that name.  Download
``SUN397.tar.gz`` from vision.princeton.edu/projects/2010/SUN/ (no redistribution here).

Split (deterministic, no seed): within each class, files sorted by name (SUN397's names are
hashes, so this order is arbitrary but fixed); the first ``data.test_per_class`` (default 40) are
test, the next ``data.val_per_class`` (default 10) validation, the rest training, as the paper
(10 validation / 40 test per class).  Images: the centre square patch resized to
``data.image_size`` (default 32), decoded once into the decoded-array cache (JPEGs are decoded at a
reduced DCT scale, at least twice the target size, which is much faster).  Normalisation: the
training split's per-channel mean/std.  Augmentation: 4-pixel padded random crop and flip.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Tuple

import numpy as np

from major2minor.data.core import Augment, DataBundle
from major2minor.data.datasets._common import check_positive, first_per_class, indices_info, select_train, split_of
from major2minor.data.io import (
    IMAGE_EXTENSIONS,
    DataFormatError,
    cache_dir,
    cache_key,
    cached_arrays,
    channel_stats,
    decode_images,
    file_signature,
    missing,
    require_root,
)
from major2minor.registry import DATASETS

HOW = (
    "Download SUN397.tar.gz from vision.princeton.edu/projects/2010/SUN/, extract it and set "
    "data.root to the SUN397 folder."
)
DEFAULT_VAL, DEFAULT_TEST = 10, 40


def scan_tree(root: Path) -> Tuple[List[str], List[Path], np.ndarray]:
    """(class names, image paths, labels): every folder holding images is a class, sorted by path."""
    classes: List[Tuple[str, List[Path]]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        images = sorted(f for f in filenames if Path(f).suffix.lower() in IMAGE_EXTENSIONS)
        rel = Path(dirpath).relative_to(root).as_posix()
        if images and rel != ".":
            classes.append((rel, [Path(dirpath) / f for f in images]))
    classes.sort(key=lambda c: c[0])
    names = [c[0] for c in classes]
    paths = [p for _, ps in classes for p in ps]
    labels = (
        np.concatenate([np.full(len(ps), k, dtype=np.int64) for k, (_, ps) in enumerate(classes)])
        if classes
        else np.zeros(0, dtype=np.int64)
    )
    return names, paths, labels


def find_tree(root: Path) -> Path:
    return root / "SUN397" if (root / "SUN397").is_dir() else root


@DATASETS.register("sun397")
def build_sun397(cfg, seed: int = 0) -> DataBundle:
    """SUN397 folder tree; centre square -> 32x32; 10 val / 40 test per class (sorted file order)."""
    root = find_tree(require_root(cfg.root, "sun397", "the SUN397 folder tree (a/abbey/*.jpg, ...)", HOW))
    check_positive(cfg.val_per_class, "data.val_per_class")
    check_positive(cfg.test_per_class, "data.test_per_class")
    n_val = DEFAULT_VAL if cfg.val_per_class is None else cfg.val_per_class
    n_test = DEFAULT_TEST if cfg.test_per_class is None else cfg.test_per_class
    names, paths, labels = scan_tree(root)
    if len(names) < 2:
        raise missing(
            root / "a" / "abbey",
            f"the SUN397 tree: one folder of images per scene class (found {len(names)} class folders)",
            HOW,
        )
    num_classes = len(names)
    counts = np.bincount(labels, minlength=num_classes)
    small = [c for c in range(num_classes) if counts[c] < n_val + n_test + 1]
    if small:
        c = small[0]
        raise DataFormatError(
            f"{root / names[c]}: class '{names[c]}' has {counts[c]} images, but "
            f"data.test_per_class={n_test} + data.val_per_class={n_val} + 1 training image are "
            "needed; lower them or remove the class folder."
        )
    size = cfg.image_size or 32
    key = cache_key(dataset="sun397", size=size, rule="center-square", files=file_signature(paths))
    x = cached_arrays(
        cache_dir(cfg.cache),
        f"sun397-{size}",
        key,
        lambda: {"x": decode_images(paths, size, "center-square", workers=cfg.workers)},
    )["x"]
    test_idx, rest = first_per_class(labels, n_test, num_classes)
    val_local, pool_local = first_per_class(labels[rest], n_val, num_classes)
    val_idx, pool = rest[val_local], rest[pool_local]
    train_idx = pool[select_train(labels[pool], num_classes, cfg, seed, "sun397", class_names=names)]
    mean, std = channel_stats(x[train_idx])
    return DataBundle(
        name="sun397",
        train=split_of(x, labels, train_idx),
        val=split_of(x, labels, val_idx),
        test=split_of(x, labels, test_idx),
        num_classes=num_classes,
        class_names=names,
        bounds=(0.0, 1.0),
        mean=mean,
        std=std,
        augment=Augment(crop_padding=4, flip=True) if cfg.augment else Augment(),
        info={
            "source": str(root),
            "image_size": size,
            "profile": cfg.profile,
            "indices": indices_info(train=train_idx, val=val_idx, test=test_idx),
            "indices_refer_to": "images sorted by class path, then file name",
        },
    )
