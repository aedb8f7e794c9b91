"""``imagenet-lt``: ImageNet-LT (Liu et al., 2019) over an ImageNet root, at 128x128.

Files: the list files ``ImageNet_LT_train.txt`` (115,846 images), ``ImageNet_LT_val.txt`` (20 per
class, drawn from ImageNet train) and ``ImageNet_LT_test.txt`` (ImageNet val, 50 per class), one
``relative/path label`` a line (``train/n01440764/n01440764_190.JPEG 0``), in ``data.root``,
``ROOT/ImageNet_LT`` or ``ROOT/lists``; the paths are relative to ``data.root`` (the ImageNet folder
holding ``train/`` and ``val/``).  The lists come with the OLTR code (github.com/zhmiao/
OpenLongTailRecognition-OLTR); ImageNet itself from image-net.org (no redistribution).

Two ways to read it, chosen by ``data.stream``:

* ``data.stream=true`` (the ``imagenet-lt`` recipe's default) -- **streaming**, the paper's protocol:
  a ``torch.utils.data.Dataset`` per split decodes JPEGs in ``DataLoader`` worker processes
  (``data.workers`` per training process); training images get a 128x128 random-resized crop (scale
  0.08-1, aspect 3/4-4/3) and a horizontal flip, seeded per sample, evaluation images a resize of the
  shorter side to 146 and the centre 128x128 crop.  Batches are uint8 (B, 3, 128, 128) in natural
  pixel space (bounds [0, 1] once scaled) plus int64 labels; normalisation stays inside the model.
  The registered data set returns a :class:`~major2minor.data.core.DataBundle` whose splits hold
  :class:`~major2minor.data.batches.StreamedImages`, and the engine streams them
  (:class:`~major2minor.data.batches.StreamingBatches`).  :func:`imagenet_lt_loaders` gives plain
  DataLoaders over the same datasets for custom loops.
* ``data.stream=false`` -- **in memory**: every image decoded once with the evaluation transform
  (shorter side to 146, centre 128 crop) into the decoded-array cache, then held as uint8 tensors
  (about 9 GB for all three splits); training augmentation is the in-batch padded random crop
  (16 pixels) and flip, an approximation of the random-resized crop.

Both use ImageNet's normalisation constants (inside the model), bounds [0, 1], and the list files'
natural long tail (``data.profile=natural``; longtail/step subsample the training list).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from major2minor.data.batches import StreamedImages
from major2minor.data.core import Augment, DataBundle, Split
from major2minor.data.datasets._common import indices_info, select_train, split_of
from major2minor.data.io import (
    DataFormatError,
    bilinear,
    cache_dir,
    cache_key,
    cached_arrays,
    decode_images,
    file_signature,
    first_existing,
    image_to_chw,
    missing,
    open_image,
    pil,
    require_root,
    resize_center_crop,
)
from major2minor.data.profiles import counts_of
from major2minor.registry import DATASETS

LIST_FILES = {"train": "ImageNet_LT_train.txt", "val": "ImageNet_LT_val.txt", "test": "ImageNet_LT_test.txt"}
LIST_DIRS = (".", "ImageNet_LT", "lists")
HOW = (
    "Put ImageNet (train/, val/) in data.root and the ImageNet-LT list files (ImageNet_LT_{train,val,test}.txt, "
    "from the OLTR repository github.com/zhmiao/OpenLongTailRecognition-OLTR) in data.root or "
    "data.root/ImageNet_LT."
)
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
DEFAULT_SIZE = 128


def find_lists(root: Path) -> Path:
    found = first_existing([root / d for d in LIST_DIRS if (root / d / LIST_FILES["train"]).exists()])
    if found is None:
        raise missing(
            root / LIST_FILES["train"],
            f"the ImageNet-LT list files ({', '.join(LIST_FILES.values())}) in one of {', '.join(LIST_DIRS)}",
            HOW,
        )
    return found


def read_list(path: Path) -> Tuple[List[str], np.ndarray]:
    if not path.exists():
        raise missing(path, "an ImageNet-LT list file (`relative/path label` lines)", HOW)
    rel, labels = [], []
    with open(path) as fh:
        for lineno, line in enumerate(fh, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or not parts[1].isdigit():
                raise DataFormatError(
                    f"{path}, line {lineno}: expected `relative/path label` "
                    f"(e.g. `train/n01440764/n01440764_190.JPEG 0`), got {line.strip()!r}. " + HOW
                )
            rel.append(parts[0])
            labels.append(int(parts[1]))
    if not rel:
        raise DataFormatError(f"{path}: the list is empty. " + HOW)
    return rel, np.asarray(labels, dtype=np.int64)


@dataclass
class ImageNetLTLists:
    root: Path
    list_dir: Path
    paths: Dict[str, List[str]]
    labels: Dict[str, np.ndarray]
    num_classes: int
    class_names: List[str]


def load_lists(root: Path) -> ImageNetLTLists:
    list_dir = find_lists(root)
    paths, labels = {}, {}
    for split, name in LIST_FILES.items():
        paths[split], labels[split] = read_list(list_dir / name)
    num_classes = int(max(int(v.max()) for v in labels.values())) + 1
    names = [""] * num_classes
    for rel, y in zip(paths["train"], labels["train"]):
        if not names[y]:
            names[y] = Path(rel).parent.name  # the WordNet id folder, e.g. n01440764
    missing_classes = [c for c in range(num_classes) if not names[c]]
    if missing_classes:
        raise DataFormatError(
            f"{list_dir / LIST_FILES['train']}: classes {missing_classes[:5]} have no training "
            "images; every label in the val/test lists needs training images. " + HOW
        )
    first = root / paths["train"][0]
    if not first.exists():
        raise missing(
            first, "the ImageNet image named first in the training list (paths are relative to data.root)", HOW
        )
    return ImageNetLTLists(root, list_dir, paths, labels, num_classes, names)


# ----------------------------------------------------------------------------------------------
# streaming


class RandomResizedCropFlip:
    """Random-resized crop to ``size`` (area scale 0.08-1, log-uniform aspect 3/4-4/3, 10 tries, then a
    centre crop of the clamped aspect) and a horizontal flip with probability 1/2.

    Randomness comes from ``generator`` (one per sample, see :class:`SeededIndices`), so the crops
    depend on the loader's seed only, not on the number of workers or which worker decodes a sample.
    """

    def __init__(self, size: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), flip: bool = True):
        self.size, self.scale, self.ratio, self.flip = size, scale, ratio, flip

    def box(self, width: int, height: int, generator: Optional[torch.Generator] = None) -> Tuple[int, int, int, int]:
        area = width * height
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        for _ in range(10):
            u = torch.rand(2, generator=generator).tolist()
            target = area * (self.scale[0] + (self.scale[1] - self.scale[0]) * u[0])
            aspect = math.exp(log_lo + (log_hi - log_lo) * u[1])
            w = int(round(math.sqrt(target * aspect)))
            h = int(round(math.sqrt(target / aspect)))
            if 0 < w <= width and 0 < h <= height:
                top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
                left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
                return left, top, w, h
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            w, h = width, int(round(width / self.ratio[0]))
        elif in_ratio > self.ratio[1]:
            h, w = height, int(round(height * self.ratio[1]))
        else:
            w, h = width, height
        return (width - w) // 2, (height - h) // 2, w, h

    def __call__(self, img, generator: Optional[torch.Generator] = None):
        Image = pil()
        left, top, w, h = self.box(*img.size, generator=generator)
        img = img.resize((self.size, self.size), bilinear(), box=(left, top, left + w, top + h))
        if self.flip and float(torch.rand(1, generator=generator)) < 0.5:
            img = img.transpose(getattr(Image, "Transpose", Image).FLIP_LEFT_RIGHT)
        return img

    def load(self, path: Path, generator: Optional[torch.Generator] = None):
        """Decode ``path`` and transform it, drawing as :meth:`__call__` does.

        The crop box is drawn from the file's header size first; a JPEG whose box is at least twice
        the output size is then decoded at a reduced scale (DCT scaling, 1/2 to 1/8, never below the
        box's resolution), which is what makes full-size ImageNet decoding affordable.
        """
        Image = pil()
        state = {}

        def prepare(img):
            width, height = img.size
            left, top, w, h = self.box(width, height, generator=generator)
            factor = min(w, h) / self.size
            if img.format == "JPEG" and factor >= 2:
                img.draft("RGB", (math.ceil(width / factor), math.ceil(height / factor)))
            sx, sy = img.size[0] / width, img.size[1] / height
            state["box"] = (left * sx, top * sy, (left + w) * sx, (top + h) * sy)

        img = _decode(path, prepare)
        img = img.resize((self.size, self.size), bilinear(), box=state["box"])
        if self.flip and float(torch.rand(1, generator=generator)) < 0.5:
            img = img.transpose(getattr(Image, "Transpose", Image).FLIP_LEFT_RIGHT)
        return img


class ResizeCenterCrop:
    """Shorter side to ``resize`` (default size / 0.875), then the centre ``size`` x ``size`` crop."""

    def __init__(self, size: int, resize: Optional[int] = None):
        self.size, self.resize = size, resize

    def __call__(self, img, generator: Optional[torch.Generator] = None):
        return resize_center_crop(img, self.size, self.resize)

    def load(self, path: Path, generator: Optional[torch.Generator] = None):
        """Decode (JPEG: at the smallest DCT scale that keeps the shorter side >= the resize) and
        transform: exactly what the in-memory data set's decode-once step produces."""
        resize = self.resize or int(round(self.size / 0.875))
        return resize_center_crop(open_image(Path(path), "RGB", draft=resize), self.size, self.resize)


def _decode(path: Path, prepare=None):
    """Open ``path``, let ``prepare(img)`` see the header (size, format; it may call ``img.draft``),
    decode to RGB; a missing or broken file raises the same errors as :func:`open_image`."""
    Image = pil()
    try:
        with Image.open(path) as img:
            if prepare is not None:
                prepare(img)
            return img.convert("RGB")
    except FileNotFoundError:
        raise missing(Path(path), "an image file", "Check the data set's root folder and its list files.") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataFormatError(
            f"{path}: cannot decode the image ({exc}); expected a readable JPEG/PNG file. Re-download or remove it."
        ) from None


class SeededIndices(torch.utils.data.Sampler):
    """Yields ``(index, seed)`` pairs: a seeded shuffle (or the order of ``base``, e.g. a class-balanced
    sampler) and one augmentation seed per sample, all drawn from ``generator``; each epoch differs."""

    def __init__(self, n: int, generator: torch.Generator, base: Optional[torch.utils.data.Sampler] = None):
        self.n, self.generator, self.base = n, generator, base

    def __len__(self) -> int:
        return len(self.base) if self.base is not None else self.n

    def __iter__(self):
        order = list(self.base) if self.base is not None else torch.randperm(self.n, generator=self.generator).tolist()
        seeds = torch.randint(0, 2**62, (len(order),), generator=self.generator).tolist()
        return iter(zip(order, seeds))


class ImageListDataset(Dataset):
    """Images named by a list, decoded on access: ``(uint8 (3, S, S) tensor, label)``.

    An item key is an index, or ``(index, seed)`` (from :class:`SeededIndices`): the seed drives the
    random transform through its own generator.
    """

    def __init__(self, root: Path, paths: Sequence[str], labels: Sequence[int], transform):
        self.root = Path(root)
        self.paths = list(paths)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key):
        index, generator = key, None
        if isinstance(key, tuple):
            index, seed = key
            generator = torch.Generator().manual_seed(int(seed))
        path = self.root / self.paths[index]
        if hasattr(self.transform, "load"):
            img = self.transform.load(path, generator)
        else:
            img = self.transform(open_image(path, "RGB"), generator)
        return torch.from_numpy(image_to_chw(img).copy()), int(self.labels[index])


@dataclass
class StreamingData:
    """What the engine needs from a streamed data set: loaders plus the facts a DataBundle carries."""

    name: str
    train: DataLoader
    val: DataLoader
    test: DataLoader
    num_classes: int
    class_names: List[str]
    train_counts: List[int]
    bounds: Optional[Tuple[float, float]] = (0.0, 1.0)
    mean: Optional[Tuple[float, ...]] = MEAN
    std: Optional[Tuple[float, ...]] = STD
    input_shape: Tuple[int, ...] = (3, DEFAULT_SIZE, DEFAULT_SIZE)
    info: Dict[str, Any] = field(default_factory=dict)


def imagenet_lt_datasets(cfg, seed: int = 0) -> Tuple[Dict[str, ImageListDataset], ImageNetLTLists, np.ndarray]:
    """The three streaming datasets (train with random-resized crop + flip, val/test centre crop)."""
    root = require_root(cfg.root, "imagenet-lt", "ImageNet (train/, val/) and the ImageNet-LT list files", HOW)
    lists = load_lists(root)
    size = cfg.image_size or DEFAULT_SIZE
    train_idx = select_train(
        lists.labels["train"], lists.num_classes, cfg, seed, "imagenet-lt", class_names=lists.class_names
    )
    train_tf = RandomResizedCropFlip(size, flip=True) if cfg.augment else ResizeCenterCrop(size)
    datasets = {
        "train": ImageListDataset(
            root, [lists.paths["train"][i] for i in train_idx], lists.labels["train"][train_idx], train_tf
        ),
        "val": ImageListDataset(root, lists.paths["val"], lists.labels["val"], ResizeCenterCrop(size)),
        "test": ImageListDataset(root, lists.paths["test"], lists.labels["test"], ResizeCenterCrop(size)),
    }
    return datasets, lists, train_idx


def imagenet_lt_loaders(
    cfg,
    batch_size: int = 256,
    seed: int = 0,
    eval_batch_size: Optional[int] = None,
    sampler: Optional[torch.utils.data.Sampler] = None,
) -> StreamingData:
    """Streaming ImageNet-LT: DataLoaders with ``cfg.workers`` worker processes.

    ``cfg`` is a :class:`~major2minor.config.DataConfig`.  The training loader shuffles with a
    generator seeded by ``seed`` (or follows ``sampler``, e.g. a class-balanced one for DRS/M2m) and
    drops no batches; each training sample gets its own augmentation seed from that generator, so the
    batches depend on ``seed`` only, not on the number of workers.  Evaluation loaders keep list order.
    The engine's own streaming path is the registered data set with ``data.stream=true``.
    """
    datasets, lists, train_idx = imagenet_lt_datasets(cfg, seed)
    workers = max(int(cfg.workers), 0)
    common = dict(num_workers=workers, pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0)
    gen = torch.Generator().manual_seed(seed)
    train = DataLoader(
        datasets["train"],
        batch_size=batch_size,
        sampler=SeededIndices(len(datasets["train"]), gen, sampler),
        generator=gen,
        **common,
    )
    val = DataLoader(datasets["val"], batch_size=eval_batch_size or batch_size, shuffle=False, **common)
    test = DataLoader(datasets["test"], batch_size=eval_batch_size or batch_size, shuffle=False, **common)
    size = cfg.image_size or DEFAULT_SIZE
    return StreamingData(
        name="imagenet-lt",
        train=train,
        val=val,
        test=test,
        num_classes=lists.num_classes,
        class_names=lists.class_names,
        train_counts=counts_of(datasets["train"].labels, lists.num_classes),
        input_shape=(3, size, size),
        info={
            "source": str(lists.root),
            "lists": str(lists.list_dir),
            "image_size": size,
            "streaming": True,
            "profile": cfg.profile,
            "indices": indices_info(train=train_idx),
        },
    )


# ----------------------------------------------------------------------------------------------
# in memory


def _list_digest(root: Path, paths: Sequence[str], labels: np.ndarray) -> bytes:
    import hashlib

    digest = hashlib.sha256(str(root).encode())
    digest.update("\n".join(paths).encode())
    digest.update(np.asarray(labels, dtype=np.int64).tobytes())
    return digest.digest()


def build_imagenet_lt_streamed(cfg, seed: int = 0) -> DataBundle:
    """ImageNet-LT with every split streamed from its JPEG files (``data.stream=true``)."""
    datasets, lists, train_idx = imagenet_lt_datasets(cfg, seed)
    size = cfg.image_size or DEFAULT_SIZE
    shape = (3, size, size)
    workers = max(int(cfg.workers), 0)

    def split(name: str, train_dataset=None) -> Split:
        ds = datasets[name]
        plain = ds if train_dataset is None else ImageListDataset(ds.root, ds.paths, ds.labels, ResizeCenterCrop(size))
        images = StreamedImages(
            plain,
            shape,
            train_dataset=train_dataset,
            workers=workers,
            fingerprint=_list_digest(ds.root, ds.paths, ds.labels),
        )
        return Split(images, torch.as_tensor(ds.labels, dtype=torch.long))

    return DataBundle(
        name="imagenet-lt",
        train=split("train", datasets["train"]),
        val=split("val"),
        test=split("test"),
        num_classes=lists.num_classes,
        class_names=lists.class_names,
        bounds=(0.0, 1.0),
        mean=MEAN,
        std=STD,
        augment=Augment(),  # the random-resized crop and flip happen per sample in the loader
        info={
            "source": str(lists.root),
            "lists": str(lists.list_dir),
            "image_size": size,
            "streaming": True,
            "train_transform": "random-resized-crop 0.08-1, 3/4-4/3, flip" if cfg.augment else "resize-center-crop",
            "eval_transform": f"resize {int(round(size / 0.875))}, centre crop {size}",
            "workers": workers,
            "profile": cfg.profile,
            "indices": indices_info(train=train_idx),
            "indices_refer_to": "train: lines of ImageNet_LT_train.txt (val/test lists are used whole)",
        },
    )


@DATASETS.register("imagenet-lt", streams=True)  # data.stream=true is supported (config.validate checks this)
def build_imagenet_lt(cfg, seed: int = 0) -> DataBundle:
    """ImageNet-LT lists over an ImageNet root at 128x128: streamed (data.stream) or decoded once."""
    if getattr(cfg, "stream", False):
        return build_imagenet_lt_streamed(cfg, seed)
    root = require_root(cfg.root, "imagenet-lt", "ImageNet (train/, val/) and the ImageNet-LT list files", HOW)
    lists = load_lists(root)
    size = cfg.image_size or DEFAULT_SIZE
    arrays = {}
    for split in ("train", "val", "test"):
        paths = [root / p for p in lists.paths[split]]
        key = cache_key(
            dataset="imagenet-lt", split=split, size=size, rule="resize-center-crop", files=file_signature(paths)
        )
        arrays[split] = cached_arrays(
            cache_dir(cfg.cache),
            f"imagenet-lt-{split}-{size}",
            key,
            lambda paths=paths: {"x": decode_images(paths, size, "resize-center-crop", workers=cfg.workers)},
        )["x"]
    y = lists.labels
    train_idx = select_train(y["train"], lists.num_classes, cfg, seed, "imagenet-lt", class_names=lists.class_names)
    return DataBundle(
        name="imagenet-lt",
        train=split_of(arrays["train"], y["train"], train_idx),
        val=split_of(arrays["val"], y["val"]),
        test=split_of(arrays["test"], y["test"]),
        num_classes=lists.num_classes,
        class_names=lists.class_names,
        bounds=(0.0, 1.0),
        mean=MEAN,
        std=STD,
        augment=Augment(crop_padding=max(size // 8, 1), flip=True) if cfg.augment else Augment(),
        info={
            "source": str(root),
            "lists": str(lists.list_dir),
            "image_size": size,
            "streaming": False,
            "profile": cfg.profile,
            "indices": indices_info(train=train_idx),
            "indices_refer_to": "train: lines of ImageNet_LT_train.txt (val/test lists are used whole)",
        },
    )
