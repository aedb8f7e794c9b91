"""``csv`` and ``npz``: your own features (or images) and labels, with the same profiles and splits.

``csv`` -- ``data.root`` is a CSV file, or a folder holding ``train.csv`` and optionally ``val.csv``
and ``test.csv``.  The first row names the columns; the label column is ``data.label_column``, else
the column named ``label``, else the last column.  Every other column must be numeric: the features.

``npz`` -- ``data.root`` is an ``.npz`` file, or a folder holding ``train.npz`` and optionally
``val.npz`` / ``test.npz``; each with arrays ``x`` and ``y`` (and optionally ``class_names``).
``x`` may be features (N, D), or images: uint8 (N, H, W), (N, C, H, W) or (N, H, W, C) with C in
{1, 3}, or float images in [0, 1].

Labels (any values) are mapped to classes 0..C-1 in sorted order (numerically when all are integers).
CSV label columns whose every training value is a number are read as numbers, so numerically equal
spellings are one class: ``1``, ``1.0`` and ``01`` are class ``1`` (integer-valued labels are named as
integers); a validation/test file's labels are read the same way.  Such a column is refused as a
regression target when it looks continuous: a value that is not a whole number (``0.37``), or more than
:data:`CONTINUOUS_DISTINCT` distinct values that are also more than half the rows (an id or a measured
quantity); a numeric column with an empty cell, ``nan`` or ``inf`` (a missing label) is refused too.  Point
``data.label_column`` at the class column then.  Text labels are used as they are.  NPZ labels ``y``
keep their values (a float ``y`` holds each number once anyway); a float ``y`` that looks continuous by
the same rule, or holds NaN, is refused likewise.  Features (CSV columns, NPZ ``x``) must be finite.

Without a validation/test file those splits are held out per class in file order (see
:func:`~major2minor.data.datasets._common.user_holdout`: ``data.test_per_class`` / ``val_per_class``,
default 20% / 10% of each class), then ``data.profile`` shapes the training pool.  Every class must get
at least one validation and one test sample (else its recall would be missing from model selection or
from the reported metrics, and an all-empty validation split would stop the run after training): a
class too small for that is refused, naming it (the default round(10%) needs 6 samples a class;
``data.val_per_class=1`` / ``data.test_per_class=1`` hold out exactly one).  Feature inputs:
bounds [0, 1] and no normalisation when every training value is in [0, 1]; otherwise no bounds and
the training split's per-feature mean/std inside the model.  Images: bounds [0, 1], per-channel
mean/std of the training split, random crop (padding size/8) and flip.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from major2minor.data.core import Augment, DataBundle
from major2minor.data.datasets._common import (
    feature_normalisation,
    indices_info,
    label_index,
    select_train,
    split_of,
    user_holdout,
)
from major2minor.data.io import DataFormatError, channel_stats, missing, require_root
from major2minor.registry import DATASETS

CSV_HOW = (
    "Give data.root=FILE.csv (a header row, numeric feature columns and a label column) or a folder with "
    "train.csv [val.csv] [test.csv]."
)
NPZ_HOW = (
    "Give data.root=FILE.npz (arrays x and y, e.g. np.savez(path, x=features, y=labels)) or a folder with "
    "train.npz [val.npz] [test.npz]."
)
CONTINUOUS_DISTINCT = 50  # more distinct numeric labels than this (and than half the rows): a regression target


# ----------------------------------------------------------------------------------------------
# labels


def as_number(text: str):
    """``text`` as an int (exact, also for long integers) or a float, or None when it is not a number."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return None


def continuous_reason(values: Sequence, distinct: int) -> Optional[str]:
    """Why finite numeric labels look like a regression target rather than classes, or None."""
    fractional = next((v for v in values if isinstance(v, float) and not v.is_integer()), None)
    if fractional is not None:
        return f"it holds values that are not whole numbers, e.g. {fractional:g}"
    if distinct > CONTINUOUS_DISTINCT and distinct > len(values) / 2:
        return f"{distinct} distinct values in {len(values)} rows"
    return None


def examples(raw: Sequence, k: int = 5) -> str:
    """The first ``k`` distinct values, as the user would recognise them."""
    shown = list(dict.fromkeys(f"{v:g}" if isinstance(v, float) else str(v) for v in raw))
    return ", ".join(shown[:k]) + (" ..." if len(shown) > k else "")


def numeric_labels(raw: Dict[str, List[str]], files: Dict[str, Path], column: str) -> Dict[str, List[str]]:
    """CSV labels per split, numbers normalised (``1`` / ``1.0`` -> ``1``) when the training column is numeric.

    Without this, a column written partly as ``1`` and partly as ``1.0`` (a spreadsheet export, a
    pandas float column) would silently become two classes.  A numeric column that looks continuous is
    a regression target, most likely the wrong column: refused with the fix.
    """
    numbers = [as_number(v) for v in raw["train"]]
    if any(n is None and v != "" for n, v in zip(numbers, raw["train"])) or all(n is None for n in numbers):
        return raw  # text labels: used as they are
    bad = next((i for i, v in enumerate(numbers) if v is None or not math.isfinite(v)), None)
    if bad is not None:
        raise DataFormatError(
            f"{files['train']}: label column '{column}' holds {raw['train'][bad]!r} in data row "
            f"{bad + 1} (a missing label?); every row needs a class. Drop or fill those rows, or "
            "set data.label_column=NAME to the column that holds the classes."
        )
    distinct = len(set(numbers))
    reason = continuous_reason(numbers, distinct)
    if reason:
        raise DataFormatError(
            f"{files['train']}: label column '{column}' looks like a regression target, not "
            f"classes ({reason}; values: {examples(raw['train'])}); set data.label_column=NAME to "
            "the column that holds the class of each row."
        )

    def name(text: str) -> str:
        v = as_number(text)
        if v is None or (isinstance(v, float) and not (math.isfinite(v) and v.is_integer())):
            return text  # not a class of the training file
        return str(int(v))

    return {split: [name(v) for v in values] for split, values in raw.items()}


def check_npz_labels(y: np.ndarray, path: Path) -> None:
    """A float ``y`` must hold class ids: refuse NaN/inf and values that look continuous (a regression target)."""
    if y.dtype.kind != "f":
        return
    finite = np.isfinite(y)
    if not finite.all():
        raise DataFormatError(
            f"{path}: y holds {int((~finite).sum())} NaN or infinite label(s) (first in row "
            f"{int(np.argmin(finite))}); every row needs a class. Drop those rows or give them one."
        )
    values = y.tolist()
    reason = continuous_reason(values, len(set(values)))
    if reason:
        raise DataFormatError(
            f"{path}: y looks like a regression target, not classes ({reason}; values: "
            f"{examples(values)}); y must hold one class per row (integer ids or names)."
        )


def source_files(root: Path, ext: str, how: str) -> Dict[str, Path]:
    if root.is_file():
        return {"train": root}
    train = root / f"train.{ext}"
    if not train.exists():
        raise missing(train, f"a {ext} file of training data (or set data.root to the {ext} file itself)", how)
    return {s: root / f"{s}.{ext}" for s in ("train", "val", "test") if (root / f"{s}.{ext}").exists()}


# ----------------------------------------------------------------------------------------------
# csv


def read_csv(path: Path, label_column: Optional[str]) -> Tuple[np.ndarray, List[str], List[str], str]:
    """(features float32 (N, D), raw labels, feature column names, label column name)."""
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
            raise DataFormatError(
                f"{path}: data.label_column='{label_column}' is not a column; columns: "
                f"{', '.join(header[:10])}{' ...' if len(header) > 10 else ''}."
            )
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
                raise DataFormatError(
                    f"{path}, line {r + 2}, column '{header[col]}': {row[col]!r} is not a number; "
                    "feature columns must be numeric (set data.label_column if this is the "
                    "label)."
                ) from None
    bad = ~np.isfinite(x)
    if bad.any():
        r, j = np.argwhere(bad)[0]
        raise DataFormatError(
            f"{path}: features contain {int(bad.sum())} NaN or infinite value(s), the first at line "
            f"{r + 2}, column '{header[feature_cols[j]]}'; clean or impute them first."
        )
    return x, labels, [header[i] for i in feature_cols], header[label_at]


@DATASETS.register("csv")
def build_csv(cfg, seed: int = 0) -> DataBundle:
    """Your table: numeric feature columns + a label column (train.csv [val.csv] [test.csv], or one file)."""
    root = require_root(cfg.root, "csv", "a CSV file or a folder with train.csv", CSV_HOW)
    files = source_files(root, "csv", CSV_HOW)
    tables = {s: read_csv(p, cfg.label_column) for s, p in files.items()}
    labels = numeric_labels({s: t[1] for s, t in tables.items()}, files, tables["train"][3])
    return _assemble(
        "csv",
        root,
        files,
        {s: (t[0], labels[s]) for s, t in tables.items()},
        None,
        cfg,
        seed,
        {"features": tables["train"][2]},
    )


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
            raise DataFormatError(
                f"{path}: image array x has shape {x.shape}; expected (N, C, H, W) or (N, H, W, C) with C = 1 or 3."
            )
        if x.dtype == np.uint8:
            return np.ascontiguousarray(x)
        x = x.astype(np.float32)
        if x.min() < 0 or x.max() > 1:
            raise DataFormatError(
                f"{path}: float images must lie in [0, 1] (found [{x.min():.3g}, {x.max():.3g}]); "
                "store uint8 pixels or scale them."
            )
        return np.ascontiguousarray(x)
    raise DataFormatError(
        f"{path}: x has shape {x.shape}; expected features (N, D) or images (N, [C,] H, W[, C]). " + NPZ_HOW
    )


def read_npz(path: Path) -> Tuple[np.ndarray, List, Optional[List[str]]]:
    try:
        with np.load(path, allow_pickle=False) as z:
            if "x" not in z.files or "y" not in z.files:
                raise DataFormatError(
                    f"{path}: expected arrays 'x' and 'y', found {', '.join(z.files) or 'none'}. " + NPZ_HOW
                )
            x, y = z["x"], z["y"]
            names = [str(n) for n in z["class_names"]] if "class_names" in z.files else None
    except DataFormatError:
        raise
    except Exception as exc:  # noqa: BLE001 - truncated/empty files raise BadZipFile, EOFError, zlib.error, ...
        raise DataFormatError(
            f"{path}: not a readable .npz archive ({type(exc).__name__}: {exc}); a truncated "
            "or partial copy? " + NPZ_HOW
        ) from None
    if y.ndim != 1 or len(y) != len(x):
        raise DataFormatError(f"{path}: y must be one label per row of x; got x {x.shape}, y {y.shape}.")
    if x.dtype.kind not in "uif":
        raise DataFormatError(f"{path}: x must be numeric, got dtype {x.dtype}.")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        bad = ~np.isfinite(x.reshape(len(x), -1))
        raise DataFormatError(
            f"{path}: array x holds {int(bad.sum())} NaN or infinite value(s), the first in row "
            f"x[{int(np.argmax(bad.any(1)))}]; inputs must be finite: clean or impute them "
            "(or drop those rows) first."
        )
    check_npz_labels(y, path)
    return as_images_or_features(x, path), y.tolist(), names


@DATASETS.register("npz")
def build_npz(cfg, seed: int = 0) -> DataBundle:
    """Your arrays: x (features or images) and y in .npz files (train.npz [val.npz] [test.npz], or one file)."""
    root = require_root(cfg.root, "npz", "an .npz file or a folder with train.npz", NPZ_HOW)
    files = source_files(root, "npz", NPZ_HOW)
    loaded = {s: read_npz(p) for s, p in files.items()}
    return _assemble(
        "npz", root, files, {s: (v[0], v[1]) for s, v in loaded.items()}, loaded["train"][2], cfg, seed, {}
    )


# ----------------------------------------------------------------------------------------------


def check_held_out(
    y: np.ndarray,
    val_idx: Optional[np.ndarray],
    test_idx: Optional[np.ndarray],
    cfg,
    name: str,
    class_names: Sequence[str],
    train_file: Path,
) -> None:
    """Every class must have a held-out validation and test sample (``None``: that split is its own file).

    The default round(10%) / round(20%) per class is 0 for a class of fewer than 6 / 3 samples.  Such a
    class would be missing from the split: its recall would never count for model selection or in the
    reported metrics, and when every class is that small the validation split is empty and the run
    fails only after training.  Refused here instead, with the ways out.
    """
    counts = np.bincount(y, minlength=len(class_names))
    short: Dict[int, List[tuple]] = {}
    for split, idx, key, fraction in (
        ("validation", val_idx, "data.val_per_class", "10%"),
        ("test", test_idx, "data.test_per_class", "20%"),
    ):
        if idx is not None:
            for c in np.flatnonzero(np.bincount(y[idx], minlength=len(class_names)) == 0):
                short.setdefault(int(c), []).append((split, key, fraction))
    if not short:
        return
    c = min(short)
    setting = {key: getattr(cfg, key.split(".")[1]) for _, key, _ in short[c]}
    why = " or ".join(
        f"a {split} sample ({key}={setting[key]})"
        if setting[key] is not None
        else f"a {split} sample (the default round({fraction} of {counts[c]}) = 0)"
        for split, key, fraction in short[c]
    )
    more = f" (and {len(short) - 1} more class(es))" if len(short) > 1 else ""
    splits = " and ".join(split for split, _, _ in short[c])
    fix = " and ".join(f"{key}=1" for _, key, _ in short[c])
    own = [f"{'val' if split == 'validation' else 'test'}.{name}" for split, _, _ in short[c]]
    files = f"a separate {own[0]} file" if len(own) == 1 else f"separate {' and '.join(own)} files"
    raise ValueError(
        f"{name}: class {c} ({class_names[c]}) has {counts[c]} samples in {train_file}, too few to hold out {why}"
        f"{more}; every class needs at least one {splits} sample. Set {fix} (one per class), add samples of the "
        f"class, or give {files}."
    )


def input_space(x_all: np.ndarray, train_idx: np.ndarray, augment: bool):
    """Bounds, normalisation and augmentation: images get [0, 1], per-channel mean/std of the training split
    and crop + flip; features the rule of :func:`feature_normalisation` and no augmentation."""
    x_train = x_all[train_idx]
    if x_all.ndim != 4:
        bounds, mean, std = feature_normalisation(x_train)
        return bounds, mean, std, Augment()
    pixels = x_train if x_all.dtype == np.uint8 else np.rint(x_train * 255).astype(np.uint8)
    mean, std = channel_stats(pixels)
    size = x_all.shape[-1]
    return (0.0, 1.0), mean, std, Augment(crop_padding=max(size // 8, 1), flip=True) if augment else Augment()


def _assemble(
    name: str,
    root: Path,
    files: Dict[str, Path],
    data: Dict[str, Tuple[np.ndarray, List]],
    names_given: Optional[List[str]],
    cfg,
    seed: int,
    extra: dict,
) -> DataBundle:
    x_all, raw = data["train"]
    class_names, mapping = label_index(raw, str(files["train"]))
    if names_given is not None and len(names_given) == len(class_names):
        class_names = names_given

    def encode(split: str) -> np.ndarray:
        values = data[split][1]
        unknown = sorted({v for v in values if v not in mapping}, key=str)
        if unknown:
            raise DataFormatError(
                f"{files[split]}: labels {unknown[:5]} do not occur in {files['train']}; every "
                "validation/test label needs training samples."
            )
        return np.asarray([mapping[v] for v in values], dtype=np.int64)

    shapes = {s: d[0].shape[1:] for s, d in data.items()}
    if len(set(shapes.values())) > 1:
        raise DataFormatError(f"{root}: the splits' inputs have different shapes {shapes}; they must match.")
    y = encode("train")
    num_classes = len(class_names)
    held_val, held_test = "val" not in data, "test" not in data
    pool, val_idx, test_idx = user_holdout(y, cfg, num_classes, held_val, held_test, name, class_names)
    check_held_out(y, val_idx if held_val else None, test_idx if held_test else None, cfg, name, class_names,
                   files["train"])  # fmt: skip
    train_idx = pool[select_train(y[pool], num_classes, cfg, seed, name, class_names=class_names)]
    val = split_of(data["val"][0], encode("val")) if "val" in data else split_of(x_all, y, val_idx)
    test = split_of(data["test"][0], encode("test")) if "test" in data else split_of(x_all, y, test_idx)
    bounds, mean, std, augment = input_space(x_all, train_idx, cfg.augment)
    return DataBundle(
        name=name,
        train=split_of(x_all, y, train_idx),
        val=val,
        test=test,
        num_classes=num_classes,
        class_names=class_names,
        bounds=bounds,
        mean=mean,
        std=std,
        augment=augment,
        info={
            "source": {k: str(v) for k, v in files.items()},
            "profile": cfg.profile,
            **extra,
            "indices": indices_info(train=train_idx, val=val_idx, test=test_idx),
            "indices_refer_to": "rows of the training file",
        },
    )
