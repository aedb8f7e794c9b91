"""``cifar10-lt`` and ``cifar100-lt``: long-tailed CIFAR from the standard python pickles.

Files (``data.root`` holds the folder, or is the folder itself)::

    cifar-10-batches-py/data_batch_1 .. data_batch_5, test_batch, batches.meta
    cifar-100-python/train, test, meta          (labels: b'fine_labels')

Each pickle is a dict with ``b'data'`` (N, 3072) uint8 in channel-major order and the labels.
Get them with ``m2m data prepare cifar10-lt --root DIR`` (downloads the official archive from
www.cs.toronto.edu and verifies its MD5), or unpack the archive there yourself.

Training split (as the public M2m code's ``get_imbalanced_data``): class i keeps its first
n_i = int(n_max * mu**i) images in file order, mu = (1/rho)**(1/(C-1)), n_max = 5000 (CIFAR-10) or
500 (CIFAR-100) unless ``data.n_max`` says otherwise; ``data.selection=random`` draws them with the
run's seed instead; ``data.profile=step`` gives the step profile, ``natural`` the full balanced set.
Validation/test (as ``get_val_test_data``): the first 10% of each class of the test file in file
order (ceil(n_c / 10); ``data.val_per_class`` overrides) are validation, the rest test.
Augmentation: random 32x32 crop after 4-pixel zero padding, horizontal flip.  Normalisation constants
(inside the model) are those of design section 4.

Reading a pickle never runs code (:func:`read_pickle`): unpickling can call any importable function, so a
file swapped for a crafted one would run it.  The unpickler admits only the globals a CIFAR pickle needs
to rebuild its numpy arrays (and the latin-1 ``_codecs.encode`` Python 3 writes for bytes in protocol 2);
dicts, lists, strings, bytes and ints need no global.  Anything else is refused, naming the file and the
global, before it is called.
"""

from __future__ import annotations

import math
import pickle
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from major2minor.data.core import Augment, DataBundle
from major2minor.data.datasets._common import first_per_class, indices_info, select_train, split_of
from major2minor.data.io import DataFormatError, download, md5sum, missing, require_root, safe_extract
from major2minor.registry import DATASETS


@dataclass(frozen=True)
class CifarSpec:
    name: str
    folder: str
    train_files: Tuple[Tuple[str, str], ...]  # (file name, md5)
    test_files: Tuple[Tuple[str, str], ...]
    meta: Tuple[str, bytes]  # (file name, key of the class names)
    label_key: bytes
    num_classes: int
    n_max: int
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]
    url: str
    archive: str
    archive_md5: str


CIFAR10 = CifarSpec(
    name="cifar10-lt",
    folder="cifar-10-batches-py",
    train_files=(
        ("data_batch_1", "c99cafc152244af753f735de768cd75f"),
        ("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
        ("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"),
        ("data_batch_4", "634d18415352ddfa80567beed471001a"),
        ("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb"),
    ),
    test_files=(("test_batch", "40351d587109b95175f43aff81a1287e"),),
    meta=("batches.meta", b"label_names"),
    label_key=b"labels",
    num_classes=10,
    n_max=5000,
    mean=(0.4914, 0.4822, 0.4465),
    std=(0.2023, 0.1994, 0.2010),
    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    archive="cifar-10-python.tar.gz",
    archive_md5="c58f30108f718f92721af3b95e74349a",
)

CIFAR100 = CifarSpec(
    name="cifar100-lt",
    folder="cifar-100-python",
    train_files=(("train", "16019d7e3df5f24257cddd939b257f8d"),),
    test_files=(("test", "f0ef6b0ae62326f3e7ffdfab6717acfc"),),
    meta=("meta", b"fine_label_names"),
    label_key=b"fine_labels",
    num_classes=100,
    n_max=500,
    mean=(0.5071, 0.4867, 0.4408),
    std=(0.2675, 0.2565, 0.2761),
    url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    archive="cifar-100-python.tar.gz",
    archive_md5="eb9058c3a382ffc7106e4002c42a8d85",
)

SPECS = {CIFAR10.name: CIFAR10, CIFAR100.name: CIFAR100}


def how_to_get(spec: CifarSpec) -> str:
    return (
        f"Run `m2m data prepare {spec.name} --root DIR` to download and verify it ({spec.url}), "
        f"or unpack {spec.archive} into DIR yourself, then set data.root=DIR."
    )


def find_folder(root: Path, spec: CifarSpec) -> Path:
    """``root/<folder>``, or ``root`` itself when it already holds the pickles."""
    for candidate in (root / spec.folder, root):
        if (candidate / spec.test_files[0][0]).exists():
            return candidate
    raise missing(
        root / spec.folder,
        f"the CIFAR python pickles ({', '.join(f for f, _ in spec.train_files)}, {spec.test_files[0][0]})",
        how_to_get(spec),
    )


def _get(d: dict, key: bytes):
    if key in d:
        return d[key]
    return d.get(key.decode())  # re-pickled copies sometimes use str keys


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` as protocol 2 uses it for bytes (``encode(str, 'latin1')``), and nothing more."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):  # never a codec the file names
        raise pickle.UnpicklingError(f"_codecs.encode is only admitted with latin-1 text, got {encoding!r}")
    return text.encode("latin-1")


def _numpy_globals() -> dict:
    """The numpy functions and types that rebuild an array (numpy 1 writes numpy.core, numpy 2 numpy._core)."""
    try:
        from numpy._core.multiarray import _reconstruct
        from numpy._core.numeric import _frombuffer
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
        from numpy.core.numeric import _frombuffer
    admitted = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for core in ("numpy.core", "numpy._core"):
        admitted[(f"{core}.multiarray", "_reconstruct")] = _reconstruct  # protocols 0-4
        admitted[(f"{core}.numeric", "_frombuffer")] = _frombuffer  # protocol 5 (a re-pickled copy)
    return admitted


class _RefusedGlobal(pickle.UnpicklingError):
    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


class SafeCifarUnpickler(pickle.Unpickler):
    """An unpickler that can only rebuild numpy arrays, dicts, lists, strings, bytes and numbers.

    ``find_class`` is the only way a pickle reaches a Python callable; here it answers from a fixed table
    and refuses everything else (os.system, builtins.eval, subprocess.*, ...) before it is looked up.
    """

    ADMITTED = _numpy_globals()
    ADMITTED[("_codecs", "encode")] = _latin1_encode

    def find_class(self, module: str, name: str):
        try:
            return self.ADMITTED[(module, name)]
        except KeyError:  # (protocol 2 spells builtins the Python 2 way)
            raise _RefusedGlobal(f"{'builtins' if module == '__builtin__' else module}.{name}") from None


def read_pickle(path: Path, spec: CifarSpec) -> dict:
    """One CIFAR python pickle as a dict, read with :class:`SafeCifarUnpickler` (never runs code)."""
    if not path.exists():
        raise missing(path, "a CIFAR python pickle", how_to_get(spec))
    try:
        with open(path, "rb") as fh:
            d = SafeCifarUnpickler(fh, encoding="bytes").load()
    except _RefusedGlobal as exc:
        raise DataFormatError(
            f"refusing to load {path}: it references the Python global {exc.name}, which a CIFAR "
            "pickle never contains; loading it could run code. Re-download the official archive "
            f"(delete {path.parent} and run `m2m data prepare {spec.name} --root DIR`)."
        ) from None
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
        raise DataFormatError(
            f"{path}: not a readable CIFAR python pickle ({type(exc).__name__}: {exc}). " + how_to_get(spec)
        ) from None
    if not isinstance(d, dict):
        raise DataFormatError(f"{path}: expected a pickled dict, got {type(d).__name__}. " + how_to_get(spec))
    return d


def read_batch(path: Path, spec: CifarSpec) -> Tuple[np.ndarray, np.ndarray]:
    """(x uint8 (N, 3, 32, 32), y int64 (N,)) from one pickle."""
    d = read_pickle(path, spec)
    data, labels = _get(d, b"data"), _get(d, spec.label_key)
    if data is None or labels is None:
        raise DataFormatError(
            f"{path}: expected keys b'data' and {spec.label_key!r}, found "
            f"{sorted(map(str, d))[:6]}. " + how_to_get(spec)
        )
    data = np.asarray(data)
    labels = np.asarray(labels, dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
        raise DataFormatError(
            f"{path}: b'data' must be uint8 (N, 3072) with one label per row, got "
            f"{data.dtype} {data.shape} and {len(labels)} labels. " + how_to_get(spec)
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= spec.num_classes):
        raise DataFormatError(
            f"{path}: labels must be in [0, {spec.num_classes}), found "
            f"[{labels.min()}, {labels.max()}]. " + how_to_get(spec)
        )
    return data.reshape(-1, 3, 32, 32), labels


def class_names(folder: Path, spec: CifarSpec) -> List[str]:
    path = folder / spec.meta[0]
    if path.exists():
        names = _get(read_pickle(path, spec), spec.meta[1])
        if names is not None and len(names) == spec.num_classes:
            return [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    return [str(i) for i in range(spec.num_classes)]


def load_arrays(root: Path, spec: CifarSpec) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, List[str]]:
    folder = find_folder(root, spec)
    train = [read_batch(folder / f, spec) for f, _ in spec.train_files]
    test = [read_batch(folder / f, spec) for f, _ in spec.test_files]
    x_train = np.concatenate([b[0] for b in train])
    y_train = np.concatenate([b[1] for b in train])
    x_test = np.concatenate([b[0] for b in test])
    y_test = np.concatenate([b[1] for b in test])
    return x_train, y_train, x_test, y_test, class_names(folder, spec)


def val_sizes(y_test: np.ndarray, num_classes: int, val_per_class: Optional[int]) -> List[int]:
    """Validation images per class: ``data.val_per_class``, else the first 10% (ceil) of each class."""
    counts = np.bincount(y_test, minlength=num_classes)
    if val_per_class is not None:
        short = [c for c in range(num_classes) if counts[c] <= val_per_class]
        if short:
            raise ValueError(
                f"data.val_per_class={val_per_class} leaves no test images for class {short[0]} "
                f"({counts[short[0]]} in the test file); lower data.val_per_class."
            )
        return [int(val_per_class)] * num_classes
    # get_val_test_data: an image goes to validation while its class still has > 90% left to place
    return [int(math.ceil(n / 10)) for n in counts]


def build_cifar(spec: CifarSpec, cfg, seed: int = 0) -> DataBundle:
    root = require_root(cfg.root, spec.name, f"{spec.folder}/", how_to_get(spec))
    x_train, y_train, x_test, y_test, names = load_arrays(root, spec)
    train_idx = select_train(
        y_train, spec.num_classes, cfg, seed, spec.name, default_n_max=spec.n_max, class_names=names
    )
    val_idx, test_idx = first_per_class(
        y_test, val_sizes(y_test, spec.num_classes, cfg.val_per_class), spec.num_classes
    )
    return DataBundle(
        name=spec.name,
        train=split_of(x_train, y_train, train_idx),
        val=split_of(x_test, y_test, val_idx),
        test=split_of(x_test, y_test, test_idx),
        num_classes=spec.num_classes,
        class_names=names,
        bounds=(0.0, 1.0),
        mean=spec.mean,
        std=spec.std,
        augment=Augment(crop_padding=4, flip=True) if cfg.augment else Augment(),
        info={
            "source": str(find_folder(root, spec)),
            "profile": cfg.profile,
            "ratio": cfg.ratio,
            "n_max": cfg.n_max or spec.n_max,
            "selection": cfg.selection,
            "indices": indices_info(train=train_idx, val=val_idx, test=test_idx),
            "indices_refer_to": "train: the concatenated training pickles; val/test: the test pickle",
        },
    )


def prepare_cifar(name: str, root: Path, verify: bool = True, say=print) -> None:
    """``m2m data prepare``: download and unpack the official archive when the pickles are missing (MD5
    checked), and check every pickle's MD5 (``verify``)."""
    spec = SPECS[name]
    root.mkdir(parents=True, exist_ok=True)
    folder = root / spec.folder
    files = list(spec.train_files) + list(spec.test_files)
    if not all((folder / f).exists() for f, _ in files):
        archive = download(spec.url, root / spec.archive, spec.archive_md5, progress=say)
        say(f"extracting {archive} into {root}")
        safe_extract(archive, root)
        verify = True
    if verify:
        for f, md5 in files:
            got = md5sum(folder / f)
            if got != md5:
                raise DataFormatError(
                    f"{folder / f}: MD5 {got} does not match the official {md5}; the file is corrupt "
                    f"or not the official CIFAR pickle. Delete {folder} and run `m2m data prepare "
                    f"{spec.name} --root {root}` again (or pass --no-verify to use it anyway)."
                )
        say(f"{folder}: {len(files)} pickles, checksums OK")


@DATASETS.register("cifar10-lt", prepare=partial(prepare_cifar, "cifar10-lt"))
def build_cifar10_lt(cfg, seed: int = 0) -> DataBundle:
    """CIFAR-10 pickles, long-tailed (first n_i per class in file order); val = first 10% of test."""
    return build_cifar(CIFAR10, cfg, seed)


@DATASETS.register("cifar100-lt", prepare=partial(prepare_cifar, "cifar100-lt"))
def build_cifar100_lt(cfg, seed: int = 0) -> DataBundle:
    """CIFAR-100 pickles (fine labels), long-tailed; val = first 10% of each test class."""
    return build_cifar(CIFAR100, cfg, seed)
