"""cifar10-lt / cifar100-lt from miniature pickles in the exact CIFAR python format."""

import pickle

import numpy as np
import pytest
import torch

from major2minor.config import DataConfig
from major2minor.data import build_dataset
from major2minor.data.io import DataFormatError, DataNotFoundError
from major2minor.data.profiles import longtail_counts

TRAIN_PER_CLASS, TEST_PER_CLASS = 24, 20


def _labels(num_classes, per_class, seed):
    y = np.repeat(np.arange(num_classes), per_class)
    return np.random.default_rng(seed).permutation(y)  # interleaved, like the real files


def _images(y, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(len(y), 3072), dtype=np.uint8)
    x[:, 0] = np.arange(len(y)) % 256  # a per-row tag for checking file order
    x[:, 1] = np.arange(len(y)) // 256
    return x


def _dump(path, obj):
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=2)


def make_cifar10(root, num_classes=10):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    y = _labels(num_classes, TRAIN_PER_CLASS, 0)
    x = _images(y, 1)
    for b, (xs, ys) in enumerate(zip(np.array_split(x, 5), np.array_split(y, 5)), 1):
        _dump(
            folder / f"data_batch_{b}",
            {
                b"batch_label": b"training batch",
                b"labels": ys.tolist(),
                b"data": xs,
                b"filenames": [b"x.png"] * len(ys),
            },
        )
    yt = _labels(num_classes, TEST_PER_CLASS, 2)
    _dump(folder / "test_batch", {b"labels": yt.tolist(), b"data": _images(yt, 3)})
    _dump(folder / "batches.meta", {b"label_names": [f"c{i}".encode() for i in range(num_classes)], b"num_vis": 3072})
    return x, y, yt


def make_cifar100(root):
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    y = _labels(100, 6, 0)
    _dump(folder / "train", {b"fine_labels": y.tolist(), b"coarse_labels": (y // 5).tolist(), b"data": _images(y, 1)})
    yt = _labels(100, 10, 2)
    _dump(folder / "test", {b"fine_labels": yt.tolist(), b"coarse_labels": (yt // 5).tolist(), b"data": _images(yt, 3)})
    _dump(folder / "meta", {b"fine_label_names": [f"f{i}".encode() for i in range(100)]})
    return y, yt


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    return root, make_cifar10(root)


def cfg(root, **kw):
    return DataConfig(name="cifar10-lt", root=str(root), **{"ratio": 10, "n_max": 20, **kw})


def test_longtail_first_in_file_order_and_test_split(cifar_root):
    root, (x, y, yt) = cifar_root
    b = build_dataset(cfg(root), seed=0)
    expected = longtail_counts(20, 10, 10)
    assert b.train_counts == expected and len(b.train) == sum(expected)
    # the first n_i of each class in file order, in file order
    idx = np.concatenate([np.flatnonzero(y == c)[:n] for c, n in enumerate(expected)])
    idx.sort()
    assert b.info["indices"]["train"] == idx.tolist()
    tags = b.train.x[:, 0, 0, 0].long() + 256 * b.train.x[:, 0, 0, 1].long()
    assert tags.tolist() == idx.tolist()
    # validation: the first ceil(20/10) = 2 test images of each class; the rest test
    assert torch.bincount(b.val.y).tolist() == [2] * 10
    assert torch.bincount(b.test.y).tolist() == [18] * 10
    val_idx = np.sort(np.concatenate([np.flatnonzero(yt == c)[:2] for c in range(10)]))
    assert b.info["indices"]["val"] == val_idx.tolist()
    assert b.train.x.dtype == torch.uint8 and b.input_shape == (3, 32, 32)
    assert b.bounds == (0.0, 1.0)
    assert b.mean == (0.4914, 0.4822, 0.4465) and b.std == (0.2023, 0.1994, 0.2010)
    assert b.augment.crop_padding == 4 and b.augment.flip
    assert b.class_names[:2] == ["c0", "c1"]


def test_pixels_are_channel_major_like_the_real_pickles(cifar_root):
    root, (x, y, _) = cifar_root
    b = build_dataset(cfg(root, profile="natural"), seed=0)
    assert len(b.train) == len(y)
    assert np.array_equal(b.train.x[5].numpy(), x[5].reshape(3, 32, 32))


def test_random_selection_is_seeded(cifar_root):
    root, _ = cifar_root
    a = build_dataset(cfg(root, selection="random"), seed=1)
    a2 = build_dataset(cfg(root, selection="random"), seed=1)
    c = build_dataset(cfg(root, selection="random"), seed=2)
    assert torch.equal(a.train.x, a2.train.x)
    assert a.train_counts == c.train_counts == longtail_counts(20, 10, 10)
    assert a.info["indices"]["train"] != c.info["indices"]["train"]


def test_step_profile_and_val_override(cifar_root):
    root, _ = cifar_root
    b = build_dataset(cfg(root, profile="step", ratio=10, n_max=20, val_per_class=5), seed=0)
    assert b.train_counts == [20] * 5 + [2] * 5
    assert torch.bincount(b.val.y).tolist() == [5] * 10


def test_default_n_max_too_large_names_the_fix(cifar_root):
    root, _ = cifar_root
    with pytest.raises(ValueError, match=r"data.n_max=5000.*only 24 are available.*lower data.n_max \(at most 24"):
        build_dataset(DataConfig(name="cifar10-lt", root=str(root), ratio=10), seed=0)
    with pytest.raises(ValueError, match=r"no data.n_max fits data.ratio=100 "):
        build_dataset(DataConfig(name="cifar10-lt", root=str(root), ratio=100), seed=0)


def test_root_pointing_at_the_batches_folder_works(cifar_root):
    root, _ = cifar_root
    b = build_dataset(cfg(root / "cifar-10-batches-py"), seed=0)
    assert len(b.train) == sum(longtail_counts(20, 10, 10))


def test_cifar100_fine_labels(tmp_path):
    y, yt = make_cifar100(tmp_path)
    b = build_dataset(DataConfig(name="cifar100-lt", root=str(tmp_path), ratio=5, n_max=6), seed=0)
    assert b.num_classes == 100 and b.train_counts == longtail_counts(6, 100, 5)
    assert torch.bincount(b.val.y, minlength=100).tolist() == [1] * 100
    assert b.class_names[99] == "f99" and b.mean == (0.5071, 0.4867, 0.4408)


def test_missing_files_say_where_and_how(tmp_path):
    with pytest.raises(DataNotFoundError) as err:
        build_dataset(DataConfig(name="cifar10-lt", root=str(tmp_path)), seed=0)
    msg = str(err.value)
    assert "cifar-10-batches-py" in msg and "m2m data prepare cifar10-lt" in msg and str(tmp_path) in msg
    with pytest.raises(FileNotFoundError, match="data.root is not set"):
        build_dataset(DataConfig(name="cifar10-lt"), seed=0)


def test_malformed_pickle_is_a_format_error(tmp_path):
    make_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DataFormatError, match=r"data_batch_3: not a readable CIFAR python pickle"):
        build_dataset(cfg(tmp_path), seed=0)
    _dump(tmp_path / "cifar-10-batches-py" / "data_batch_3", {b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]})
    with pytest.raises(DataFormatError, match=r"uint8 \(N, 3072\)"):
        build_dataset(cfg(tmp_path), seed=0)
