"""``folder``: your own images, one sub-folder per class (like torchvision's ImageFolder).

Layouts under ``data.root``::

    ROOT/CLASS/*.png|jpg ...                     one tree: validation and test are held out
    ROOT/train/CLASS/..., ROOT/val/CLASS/..., ROOT/test/CLASS/...   val/ and test/ optional

Classes are the sub-folder names of the training tree, sorted; a val/test tree may only use those
names.  Files are taken in sorted name order.  Held-out splits (when no val/test tree): per class
the first ``data.test_per_class`` files (default: round(20%) of the class) are test, the next
``data.val_per_class`` (default round(10%)) validation, the rest the training pool, to which
``data.profile`` applies (``natural`` keeps it all; ``longtail``/``step`` keep n_i of class i).

Images: the centre square patch resized to ``data.image_size`` (default 32), RGB, or grayscale when
the first training image is grayscale; decoded once into the decoded-array cache (a per-user folder,
``data.cache`` or ``$M2M_CACHE`` or ``~/.cache/major2minor``: nothing is written under ``data.root``),
keyed on the files' names, sizes, times and a content sample, so replaced images are decoded again
(:func:`~major2minor.data.io.file_signature` says exactly what is covered).  Normalisation:
the training split's per-channel mean/std; bounds [0, 1]; augmentation: random crop after padding by
size/8 and horizontal flip (``data.augment=false`` turns both off).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from major2minor.data.core import Augment, DataBundle
from major2minor.data.datasets._common import indices_info, select_train, split_of, user_holdout
from major2minor.data.io import (
    DataFormatError,
    cache_dir,
    cache_key,
    cached_arrays,
    channel_stats,
    decode_images,
    file_signature,
    list_images,
    missing,
    open_image,
    pil,
    require_root,
)
from major2minor.registry import DATASETS

HOW = "Put one sub-folder of images per class under data.root (or under data.root/train, /val, /test)."


def image_mode(path: Path) -> str:
    """``L`` when the image is grayscale (then the whole data set is decoded as grayscale), else ``RGB``."""
    open_image(path, "RGB")  # raises a clear error for a broken file
    with pil().open(path) as img:
        return "L" if img.mode in ("1", "L", "LA", "I", "I;16", "F") else "RGB"


def scan(tree: Path) -> Dict[str, List[Path]]:
    return {d.name: list_images(d) for d in sorted(tree.iterdir()) if d.is_dir() and not d.name.startswith(".")}


def folder_files(root: Path) -> Tuple[Dict[str, Path], List[str], Dict[str, Tuple[List[Path], np.ndarray]]]:
    """The trees (``train`` [+ ``val``, ``test``], or the root alone), the classes (the training tree's
    non-empty sub-folders, sorted) and each split's image paths with their labels."""
    if not root.is_dir():
        raise DataFormatError(
            f"data.root={root} is a file; data.name=folder expects a folder with one sub-folder "
            "of images per class (use data.name=csv or npz for tables and arrays)."
        )
    split_trees = (root / "train").is_dir()
    trees = {s: root / s for s in ("train", "val", "test") if (root / s).is_dir()} if split_trees else {"train": root}
    scanned = {s: scan(t) for s, t in trees.items()}
    classes = [c for c, files in scanned["train"].items() if files]
    if len(classes) < 2:
        raise missing(
            trees["train"] / "CLASS_NAME",
            f"one sub-folder of images per class (found {len(classes)} non-empty class folders; at least 2 are needed)",
            HOW,
        )
    class_id = {c: i for i, c in enumerate(classes)}
    files: Dict[str, Tuple[List[Path], np.ndarray]] = {}
    for split, folders in scanned.items():
        unknown = [c for c, fs in folders.items() if fs and c not in class_id]
        if unknown:
            raise DataFormatError(
                f"{trees[split] / unknown[0]}: class folder '{unknown[0]}' has no counterpart in "
                f"{trees['train']}; val/test trees may only use the training classes "
                f"({', '.join(classes[:8])}{' ...' if len(classes) > 8 else ''})."
            )
        paths = [p for c in classes for p in folders.get(c, [])]
        labels = np.asarray([class_id[c] for c in classes for _ in folders.get(c, [])], dtype=np.int64)
        files[split] = (paths, labels)
    return trees, classes, files


@DATASETS.register("folder")
def build_folder(cfg, seed: int = 0) -> DataBundle:
    """Your image folders (one sub-folder per class; optional train/val/test trees), centre square -> 32x32."""
    root = require_root(cfg.root, "folder", "one sub-folder of images per class", HOW)
    trees, classes, files = folder_files(root)
    split_trees = trees["train"] != root
    size = cfg.image_size or 32
    mode = image_mode(files["train"][0][0])
    arrays = {}
    for split, (paths, _) in files.items():
        key = cache_key(
            dataset="folder", split=split, size=size, mode=mode, rule="center-square", files=file_signature(paths)
        )
        arrays[split] = cached_arrays(
            cache_dir(cfg.cache),
            f"folder-{split}-{size}",
            key,
            lambda paths=paths: {"x": decode_images(paths, size, "center-square", mode, workers=cfg.workers)},
        )["x"]
    y = files["train"][1]
    pool, val_idx, test_idx = user_holdout(
        y, cfg, len(classes), "val" not in files, "test" not in files, "folder", classes
    )
    train_idx = pool[select_train(y[pool], len(classes), cfg, seed, "folder", class_names=classes)]
    x = arrays["train"]
    val = split_of(arrays["val"], files["val"][1]) if "val" in files else split_of(x, y, val_idx)
    test = split_of(arrays["test"], files["test"][1]) if "test" in files else split_of(x, y, test_idx)
    mean, std = channel_stats(x[train_idx])
    return DataBundle(
        name="folder",
        train=split_of(x, y, train_idx),
        val=val,
        test=test,
        num_classes=len(classes),
        class_names=classes,
        bounds=(0.0, 1.0),
        mean=mean,
        std=std,
        augment=Augment(crop_padding=max(size // 8, 1), flip=True) if cfg.augment else Augment(),
        info={
            "source": str(root),
            "image_size": size,
            "mode": mode,
            "profile": cfg.profile,
            "layout": "train/val/test trees" if split_trees else "one tree, held-out val/test",
            "indices": indices_info(train=train_idx, val=val_idx, test=test_idx),
            "indices_refer_to": "training-tree images sorted by class, then file name",
        },
    )
