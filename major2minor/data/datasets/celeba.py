"""``celeba5``: CelebA hair colour in five classes, with the M2m authors' split lists.

Files under ``data.root``:

* the split lists ``celebA_train_orig.txt``, ``celebA_val_orig.txt``, ``celebA_test_orig.txt``
  (one ``path label`` a line, label 0-4; only the path's basename is used, as the CelebA image id),
  in ``ROOT``, ``ROOT/etc`` or ``ROOT/celeba5-splits``.  They are in the public M2m repository
  (github.com/alinlab/M2m, ``etc/``): 424/2423/1499/2078/227 training images, 50 validation and 100
  test images per class;
* the aligned CelebA images (``img_align_celeba/000001.jpg`` ...), in ``ROOT/img_align_celeba``,
  ``ROOT/img_align_celeba/img_align_celeba``, ``ROOT/image64`` or ``ROOT`` itself.  CelebA's licence
  does not allow redistribution: download it from mmlab.ie.cuhk.edu.hk/projects/CelebA.html.

Each image is decoded once (centre square patch, resized to ``data.image_size``, default 32, with
Pillow) into the decoded-array cache.  The public code's transform is ``Resize(32)`` on the authors'
square 64x64 copies; on the 178x218 aligned images the centre square keeps that geometry.
Augmentation: random crop with 4-pixel padding and flip (as the public code).  No normalisation,
as the public code (``ToTensor()`` only).  ``data.profile=natural`` uses the lists as given.

Class names: the lists carry numbers only; the names below are inferred by matching the training
counts to CelebA's attribute frequencies (count / 20: Gray 8,499, Black 48,472, Blond 29,983,
Brown 41,572, Bald 4,547) and are informative only.

Regenerating the split (:func:`regenerate_splits`, or ``m2m data prepare celeba5`` when the lists are
absent and ``list_attr_celeba.txt`` is present): keep images with exactly one of the five hair
attributes set; per class, in file order, the first 50 go to validation, the next 100 to test, and
every 20th of the rest (the 1st, 21st, ...) to training.  This is our documented rule, not the
authors' (theirs is unpublished): class sizes come out similar, the image ids differ.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from major2minor.data.core import Augment, DataBundle
from major2minor.data.datasets._common import indices_info, select_train, split_of
from major2minor.data.io import (
    DataFormatError,
    cache_dir,
    cache_key,
    cached_arrays,
    decode_images,
    file_signature,
    first_existing,
    missing,
    require_root,
)
from major2minor.registry import DATASETS

CLASS_NAMES = ["Gray_Hair", "Black_Hair", "Blond_Hair", "Brown_Hair", "Bald"]
LIST_FILES = {"train": "celebA_train_orig.txt", "val": "celebA_val_orig.txt", "test": "celebA_test_orig.txt"}
LIST_DIRS = (".", "etc", "celeba5-splits")
IMAGE_DIRS = ("img_align_celeba", "img_align_celeba/img_align_celeba", "image64", ".")
ATTR_FILES = ("list_attr_celeba.txt", "Anno/list_attr_celeba.txt", "anno/list_attr_celeba.txt")
HOW = (
    "Get the split lists from github.com/alinlab/M2m (etc/celebA_*_orig.txt) and the aligned images "
    "(img_align_celeba) from mmlab.ie.cuhk.edu.hk/projects/CelebA.html into data.root, or regenerate "
    "the lists from list_attr_celeba.txt with `m2m data prepare celeba5 --root DIR`."
)


def find_lists(root: Path) -> Optional[Path]:
    return first_existing([root / d for d in LIST_DIRS if (root / d / LIST_FILES["train"]).exists()])


def read_list(path: Path, num_classes: int = 5) -> Tuple[List[str], np.ndarray]:
    """(image ids, labels) of a ``path label`` list; the id is the path's basename."""
    ids, labels = [], []
    with open(path) as fh:
        for lineno, line in enumerate(fh, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
                raise DataFormatError(
                    f"{path}, line {lineno}: expected `path label` (e.g. `img_align_celeba/"
                    f"000001.jpg 3`), got {line.strip()!r}. " + HOW
                )
            label = int(parts[1])
            if not 0 <= label < num_classes:
                raise DataFormatError(f"{path}, line {lineno}: label {label} is outside [0, {num_classes}). " + HOW)
            ids.append(parts[0].replace("\\", "/").rsplit("/", 1)[-1])
            labels.append(label)
    if not ids:
        raise DataFormatError(f"{path}: the list is empty; expected one `path label` line per image. " + HOW)
    return ids, np.asarray(labels, dtype=np.int64)


def find_image_dir(root: Path, image_id: str) -> Path:
    found = first_existing([root / d for d in IMAGE_DIRS if (root / d / image_id).exists()])
    if found is None:
        raise missing(
            root / IMAGE_DIRS[0] / image_id,
            "the aligned CelebA images (img_align_celeba/*.jpg) "
            f"named in the split lists; looked in {', '.join(IMAGE_DIRS)} under {root}",
            HOW,
        )
    return found


def regenerate_splits(
    attr_file: Path, out_dir: Path, val_per_class: int = 50, test_per_class: int = 100, subsample: int = 20
) -> Dict[str, List[int]]:
    """Write ``celebA_{train,val,test}_orig.txt`` into ``out_dir`` from CelebA's attribute file.

    Rule: images with exactly one of the five hair attributes (CLASS_NAMES order = label) set to 1;
    per class in file order the first ``val_per_class`` -> val, the next ``test_per_class`` -> test,
    then every ``subsample``-th remaining image -> train.  Returns the per-class counts per split.
    """
    attr_file = Path(attr_file)
    with open(attr_file) as fh:
        lines = fh.read().splitlines()
    if len(lines) < 3:
        raise DataFormatError(
            f"{attr_file}: expected CelebA's list_attr_celeba.txt (a count line, a header of "
            "40 attribute names, then `image_id v1 .. v40` with values 1/-1). " + HOW
        )
    header = lines[1].split()
    try:
        columns = [header.index(name) for name in CLASS_NAMES]
    except ValueError:
        raise DataFormatError(
            f"{attr_file}: line 2 must name the attributes {', '.join(CLASS_NAMES)}; got "
            f"{' '.join(header[:8])} ... " + HOW
        ) from None
    per_class: List[List[str]] = [[] for _ in CLASS_NAMES]
    for lineno, line in enumerate(lines[2:], 3):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != len(header) + 1:
            raise DataFormatError(
                f"{attr_file}, line {lineno}: expected an image id and {len(header)} values, "
                f"got {len(parts)} fields. " + HOW
            )
        on = [k for k, col in enumerate(columns) if parts[col + 1] == "1"]
        if len(on) == 1:
            per_class[on[0]].append(parts[0])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    splits: Dict[str, List[Tuple[str, int]]] = {"train": [], "val": [], "test": []}
    for label, ids in enumerate(per_class):
        if len(ids) < val_per_class + test_per_class + 1:
            raise DataFormatError(
                f"{attr_file}: class {CLASS_NAMES[label]} has only {len(ids)} images, fewer "
                f"than val_per_class + test_per_class + 1 = {val_per_class + test_per_class + 1}."
            )
        splits["val"] += [(i, label) for i in ids[:val_per_class]]
        splits["test"] += [(i, label) for i in ids[val_per_class : val_per_class + test_per_class]]
        splits["train"] += [(i, label) for i in ids[val_per_class + test_per_class :: subsample]]
    for split, rows in splits.items():
        text = "".join(f"img_align_celeba/{i} {label}\n" for i, label in rows)
        (out_dir / LIST_FILES[split]).write_text(text)
    return {k: np.bincount([r[1] for r in v], minlength=5).tolist() for k, v in splits.items()}


def prepare_celeba5(root: Path, verify: bool = True, say=print) -> None:
    """``m2m data prepare``: regenerate the split lists from ``list_attr_celeba.txt`` when they are missing."""
    if not root.exists() or find_lists(root) is not None:
        return
    attr = next((root / a for a in ATTR_FILES if (root / a).exists()), None)
    if attr is None:
        return  # building the data set raises the error that says what is missing
    out = root / "celeba5-splits"
    counts = regenerate_splits(attr, out)
    say(
        f"regenerated the CelebA-5 split lists from {attr} into {out} (rule: exactly one hair attribute; per class "
        f"first 50 -> val, next 100 -> test, every 20th of the rest -> train): {counts}"
    )


@DATASETS.register("celeba5", prepare=prepare_celeba5)
def build_celeba5(cfg, seed: int = 0) -> DataBundle:
    """CelebA-5 hair colours with the M2m split lists; centre square -> 32x32, decoded once into a cache."""
    root = require_root(cfg.root, "celeba5", "the CelebA-5 split lists and img_align_celeba/", HOW)
    list_dir = find_lists(root)
    if list_dir is None:
        raise missing(
            root / LIST_FILES["train"],
            f"the CelebA-5 split lists ({', '.join(LIST_FILES.values())}) in one of {', '.join(LIST_DIRS)}",
            HOW,
        )
    ids, labels = {}, {}
    for split, name in LIST_FILES.items():
        path = list_dir / name
        if not path.exists():
            raise missing(path, f"the CelebA-5 {split} list", HOW)
        ids[split], labels[split] = read_list(path)
    image_dir = find_image_dir(root, ids["train"][0])
    size = cfg.image_size or 32
    all_ids = ids["train"] + ids["val"] + ids["test"]
    paths = [image_dir / i for i in all_ids]
    for p in paths:
        if not p.exists():
            raise missing(p, "an aligned CelebA image named in the split lists", HOW)
    key = cache_key(dataset="celeba5", size=size, rule="center-square", files=file_signature(paths))
    x = cached_arrays(
        cache_dir(cfg.cache),
        f"celeba5-{size}",
        key,
        lambda: {"x": decode_images(paths, size, "center-square", workers=cfg.workers)},
    )["x"]
    n_tr, n_va = len(ids["train"]), len(ids["val"])
    x_train, x_val, x_test = x[:n_tr], x[n_tr : n_tr + n_va], x[n_tr + n_va :]
    train_idx = select_train(labels["train"], 5, cfg, seed, "celeba5", class_names=CLASS_NAMES)
    return DataBundle(
        name="celeba5",
        train=split_of(x_train, labels["train"], train_idx),
        val=split_of(x_val, labels["val"]),
        test=split_of(x_test, labels["test"]),
        num_classes=5,
        class_names=list(CLASS_NAMES),
        bounds=(0.0, 1.0),
        mean=None,
        std=None,
        augment=Augment(crop_padding=4, flip=True) if cfg.augment else Augment(),
        info={
            "source": str(root),
            "lists": str(list_dir),
            "images": str(image_dir),
            "image_size": size,
            "profile": cfg.profile,
            "indices": indices_info(train=train_idx),
            "indices_refer_to": "train: lines of celebA_train_orig.txt (val/test lists are used whole)",
        },
    )
