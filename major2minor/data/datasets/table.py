"""``csv`` and ``npz``: your own features (or images) and labels, with the same profiles and splits.

``csv`` -- ``data.root`` is a CSV file, or a folder holding ``train.csv`` and optionally ``val.csv``
and ``test.csv``.  The first row names the columns; the label column is ``data.label_column``, else
the column named ``label``, else the last column.  Every other column must be numeric: the features.

``npz`` -- ``data.root`` is an ``.npz`` file, or a folder holding ``train.npz`` and optionally
``val.npz`` / ``test.npz``; each with arrays ``x`` and ``y`` (and optionally ``class_names``).
``x`` may be features (N, D), or images: uint8 (N, H, W), (N, C, H, W) or (N, H, W, C) with C in
{1, 3}, or float images in [0, 1].

Labels (any values) are mapped to classes 0..C-1 in sorted order (numerically when all are integers).
Without a validation/test file those splits are held out per class in file order (see
:func:`~major2minor.data.datasets._common.user_holdout`: ``data.test_per_class`` / ``val_per_class``,
default 20% / 10% of each class), then ``data.profile`` shapes the training pool.  Feature inputs:
bounds [0, 1] and no normalisation when every training value is in [0, 1]; otherwise no bounds and
the training split's per-feature mean/std inside the model.  Images: bounds [0, 1], per-channel
mean/std of the training split, random crop (padding size/8) and flip.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from major2minor.data.core import Augment, DataBundle
from major2minor.data.datasets._common import (feature_normalisation, indices_info, label_index, select_train,
                                               split_of, user_holdout)
from major2minor.data.io import DataFormatError, channel_stats, missing, require_root
from major2minor.registry import DATASETS

CSV_HOW = ("Give data.root=FILE.csv (a header row, numeric feature columns and a label column) or a folder with "
           "train.csv [val.csv] [test.csv].")
NPZ_HOW = ("Give data.root=FILE.npz (arrays x and y, e.g. np.savez(path, x=features, y=labels)) or a folder with "
           "train.npz [val.npz] [test.npz].")


def source_files(root: Path, ext: str, how: str) -> Dict[str, Path]:
    if root.is_file():
        return {"train": root}
    train = root / f"train.{ext}"
    if not train.exists():
        raise missing(train, f"a {ext} file of training data (or set data.root to the {ext} file itself)", how)
    return {s: root / f"{s}.{ext}" for s in ("train", "val", "test") if (root / f"{s}.{ext}").exists()}


# ----------------------------------------------------------------------------------------------
# csv

def read_csv(path: Path, label_column: Optional[str]) -> Tuple[np.ndarray, List[str], List[str]]:
    """(features float32 (N, D), raw labels, feature column names)."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataFormatError(f"{path}: not a UTF-8 CSV text file ({type(exc).__name__}: {exc}). " + CSV_HOW) from None
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if len(rows) < 2:
        raise DataFormatError(f"{path}: expected a header row and at least one data row. " + CSV_HOW)
    header = [h.strip() for h in rows[0]]
    if label_column is not None:
        if label_column not in header:
            raise DataFormatError(f"{path}: data.label_column='{label_column}' is not a column; columns: "
                                  f"{', '.join(header[:10])}{' ...' if len(header) > 10 else ''}.")
        label_at = header.index(label_column)
    else:
        label_at = header.index("label") if "label" in header else len(header) - 1
    feature_cols = [i for i in range(len(header)) if i != label_at]
    if not feature_cols:
        raise DataFormatError(f"{path}: only a label column; expected numeric feature columns too. " + CSV_HOW)
    x = np.empty((len(rows) - 1, len(feature_cols)), dtype=np.float32)
    labels = []
    for r, row in enumerate(rows[1:]):
        if len(row) != len(header):
            raise DataFormatError(f"{path}, line {r + 2}: {len(row)} fields, but the header has {len(header)}.")
        labels.append(row[label_at].strip())
        for j, col in enumerate(feature_cols):
            try:
                x[r, j] = float(row[col])
            except ValueError:
                raise DataFormatError(f"{path}, line {r + 2}, column '{header[col]}': {row[col]!r} is not a number; "
                                      "feature columns must be numeric (set data.label_column if this is the "
                                      "label).") from None
    if not np.isfinite(x).all():
        raise DataFormatError(f"{path}: features contain NaN or infinite values; clean or impute them first.")
    return x, labels, [header[i] for i in feature_cols]


@DATASETS.register("csv")
def build_csv(cfg, seed: int = 0) -> DataBundle:
    """Your table: numeric feature columns + a label column (train.csv [val.csv] [test.csv], or one file)."""
    root = require_root(cfg.root, "csv", "a CSV file or a folder with train.csv", CSV_HOW)
    files = source_files(root, "csv", CSV_HOW)
    tables = {s: read_csv(p, cfg.label_column) for s, p in files.items()}
    return _assemble("csv", root, files, {s: (t[0], t[1]) for s, t in tables.items()}, None, cfg, seed,
                     {"features": tables["train"][2]})


# ----------------------------------------------------------------------------------------------
# npz

def as_images_or_features(x: np.ndarray, path: Path) -> np.ndarray:
    if x.ndim == 2:
        return x.astype(np.float32)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim == 4:
        if x.shape[1] not in (1, 3) and x.shape[-1] in (1, 3):
            x = x.transpose(0, 3, 1, 2)
        if x.shape[1] not in (1, 3):
            raise DataFormatError(f"{path}: image array x has shape {x.shape}; expected (N, C, H, W) or (N, H, W, C) "
                                  "with C = 1 or 3.")
        if x.dtype == np.uint8:
            return np.ascontiguousarray(x)
        x = x.astype(np.float32)
        if x.min() < 0 or x.max() > 1:
            raise DataFormatError(f"{path}: float images must lie in [0, 1] (found [{x.min():.3g}, {x.max():.3g}]); "
                                  "store uint8 pixels or scale them.")
        return np.ascontiguousarray(x)
    raise DataFormatError(f"{path}: x has shape {x.shape}; expected features (N, D) or images (N, [C,] H, W[, C]). "
                          + NPZ_HOW)


def read_npz(path: Path) -> Tuple[np.ndarray, List, Optional[List[str]]]:
    try:
        with np.load(path, allow_pickle=False) as z:
            if "x" not in z.files or "y" not in z.files:
                raise DataFormatError(f"{path}: expected arrays 'x' and 'y', found {', '.join(z.files) or 'none'}. "
                                      + NPZ_HOW)
            x, y = z["x"], z["y"]
            names = [str(n) for n in z["class_names"]] if "class_names" in z.files else None
    except DataFormatError:
        raise
    except Exception as exc:  # noqa: BLE001 - truncated/empty files raise BadZipFile, EOFError, zlib.error, ...
        raise DataFormatError(f"{path}: not a readable .npz archive ({type(exc).__name__}: {exc}); a truncated "
                              "or partial copy? " + NPZ_HOW) from None
    if y.ndim != 1 or len(y) != len(x):
        raise DataFormatError(f"{path}: y must be one label per row of x; got x {x.shape}, y {y.shape}.")
    if x.dtype.kind not in "uif":
        raise DataFormatError(f"{path}: x must be numeric, got dtype {x.dtype}.")
    return as_images_or_features(x, path), y.tolist(), names


@DATASETS.register("npz")
def build_npz(cfg, seed: int = 0) -> DataBundle:
    """Your arrays: x (features or images) and y in .npz files (train.npz [val.npz] [test.npz], or one file)."""
    root = require_root(cfg.root, "npz", "an .npz file or a folder with train.npz", NPZ_HOW)
    files = source_files(root, "npz", NPZ_HOW)
    loaded = {s: read_npz(p) for s, p in files.items()}
    return _assemble("npz", root, files, {s: (v[0], v[1]) for s, v in loaded.items()}, loaded["train"][2], cfg,
                     seed, {})


# ----------------------------------------------------------------------------------------------

def _assemble(name: str, root: Path, files: Dict[str, Path], data: Dict[str, Tuple[np.ndarray, List]],
              names_given: Optional[List[str]], cfg, seed: int, extra: dict) -> DataBundle:
    x_all, raw = data["train"]
    class_names, mapping = label_index(raw, str(files["train"]))
    if names_given is not None and len(names_given) == len(class_names):
        class_names = names_given

    def encode(split: str) -> np.ndarray:
        values = data[split][1]
        unknown = sorted({v for v in values if v not in mapping}, key=str)
        if unknown:
            raise DataFormatError(f"{files[split]}: labels {unknown[:5]} do not occur in {files['train']}; every "
                                  "validation/test label needs training samples.")
        return np.asarray([mapping[v] for v in values], dtype=np.int64)

    shapes = {s: d[0].shape[1:] for s, d in data.items()}
    if len(set(shapes.values())) > 1:
        raise DataFormatError(f"{root}: the splits' inputs have different shapes {shapes}; they must match.")
    y = encode("train")
    num_classes = len(class_names)
    pool, val_idx, test_idx = user_holdout(y, cfg, num_classes, "val" not in data, "test" not in data, name,
                                           class_names)
    train_idx = pool[select_train(y[pool], num_classes, cfg, seed, name, class_names=class_names)]
    val = split_of(data["val"][0], encode("val")) if "val" in data else split_of(x_all, y, val_idx)
    test = split_of(data["test"][0], encode("test")) if "test" in data else split_of(x_all, y, test_idx)
    x_train = x_all[train_idx]
    if x_all.ndim == 4:
        if x_all.dtype == np.uint8:
            mean, std = channel_stats(x_train)
        else:
            mean, std = channel_stats(np.rint(x_train * 255).astype(np.uint8))
        bounds = (0.0, 1.0)
        size = x_all.shape[-1]
        augment = Augment(crop_padding=max(size // 8, 1), flip=True) if cfg.augment else Augment()
    else:
        bounds, mean, std = feature_normalisation(x_train)
        augment = Augment()
    return DataBundle(
        name=name, train=split_of(x_all, y, train_idx), val=val, test=test,
        num_classes=num_classes, class_names=class_names, bounds=bounds, mean=mean, std=std, augment=augment,
        info={"source": {k: str(v) for k, v in files.items()}, "profile": cfg.profile, **extra,
              "indices": indices_info(train=train_idx, val=val_idx, test=test_idx),
              "indices_refer_to": "rows of the training file"},
    )
