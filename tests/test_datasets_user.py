"""csv and npz: a user's own tables and arrays, with the same profiles and splits."""

import numpy as np
import pytest
import torch

from major2minor.config import DataConfig
from major2minor.data import build_dataset
from major2minor.data.io import DataFormatError, DataNotFoundError


def write_csv(path, x, labels, label_name="label", label_first=False):
    cols = [f"f{j}" for j in range(x.shape[1])]
    header = [label_name] + cols if label_first else cols + [label_name]
    rows = [",".join(header)]
    for xi, yi in zip(x, labels):
        vals = [repr(float(v)) for v in xi]
        rows.append(",".join([str(yi)] + vals if label_first else vals + [str(yi)]))
    path.write_text("\n".join(rows) + "\n")


def test_csv_single_file_holdout_profile_and_normalisation(tmp_path):
    rng = np.random.default_rng(0)
    labels = ["spam"] * 30 + ["ham"] * 20 + ["eggs"] * 10
    x = rng.normal(5, 2, size=(60, 4))
    write_csv(tmp_path / "d.csv", x, labels)
    b = build_dataset(DataConfig(name="csv", root=str(tmp_path / "d.csv"), profile="natural"), seed=0)
    assert b.class_names == ["eggs", "ham", "spam"] and b.input_shape == (4,)
    # test round(20%) = 2/4/6, val round(10%) = 1/2/3 of eggs/ham/spam, first in file order
    assert torch.bincount(b.test.y).tolist() == [2, 4, 6] and torch.bincount(b.val.y).tolist() == [1, 2, 3]
    assert b.train_counts == [7, 14, 21]
    assert b.bounds is None and len(b.mean) == 4 and len(b.std) == 4  # unbounded: standardised in-model
    assert b.info["indices"]["test"][:6] == [0, 1, 2, 3, 4, 5]
    assert b.test.x[0].tolist() == pytest.approx(x[0].tolist(), rel=1e-6)
    lt = build_dataset(
        DataConfig(name="csv", root=str(tmp_path / "d.csv"), profile="longtail", ratio=3, n_max=7, selection="random"),
        seed=0,
    )
    assert lt.train_counts == [7, 4, 2]
    lt2 = build_dataset(
        DataConfig(name="csv", root=str(tmp_path / "d.csv"), profile="longtail", ratio=3, n_max=7, selection="random"),
        seed=0,
    )
    assert torch.equal(lt.train.x, lt2.train.x)


def test_csv_folder_with_split_files_label_column_and_bounds(tmp_path):
    rng = np.random.default_rng(1)
    for split, n in (("train", 12), ("val", 4), ("test", 6)):
        y = np.arange(n) % 3
        write_csv(tmp_path / f"{split}.csv", rng.random((n, 3)), y, label_name="target", label_first=True)
    b = build_dataset(DataConfig(name="csv", root=str(tmp_path), profile="natural", label_column="target"), seed=0)
    assert (len(b.train), len(b.val), len(b.test)) == (12, 4, 6)
    assert b.class_names == ["0", "1", "2"] and b.bounds == (0.0, 1.0) and b.mean is None
    with pytest.raises(DataFormatError, match=r"data.label_column='nope' is not a column"):
        build_dataset(DataConfig(name="csv", root=str(tmp_path), label_column="nope"), seed=0)
    # default label column: 'label' if present, else the last column
    last = tmp_path / "last.csv"
    last.write_text("a,b,cls\n" + "".join(f"{i},{i * 2},{'xy'[i % 2]}\n" for i in range(20)))
    b2 = build_dataset(DataConfig(name="csv", root=str(last), profile="natural"), seed=0)
    assert b2.class_names == ["x", "y"] and b2.input_shape == (2,) and b2.info["features"] == ["a", "b"]


def test_csv_errors(tmp_path):
    with pytest.raises(DataNotFoundError, match=r"train.csv.*data.root"):
        build_dataset(DataConfig(name="csv", root=str(tmp_path)), seed=0)
    (tmp_path / "train.csv").write_text("a,b,label\n1,2,x\n3,oops,y\n")
    with pytest.raises(DataFormatError, match=r"train.csv, line 3, column 'b': 'oops' is not a number"):
        build_dataset(DataConfig(name="csv", root=str(tmp_path)), seed=0)
    (tmp_path / "train.csv").write_text("a,b,label\n1,2\n")
    with pytest.raises(DataFormatError, match=r"line 2: 2 fields, but the header has 3"):
        build_dataset(DataConfig(name="csv", root=str(tmp_path)), seed=0)


def test_npz_images_nhwc_and_features(tmp_path):
    rng = np.random.default_rng(0)
    y = np.repeat([3, 7], [20, 10])
    x = rng.integers(0, 256, size=(30, 12, 12, 3), dtype=np.uint8)  # NHWC
    np.savez(tmp_path / "img.npz", x=x, y=y, class_names=np.array(["three", "seven"]))
    b = build_dataset(DataConfig(name="npz", root=str(tmp_path / "img.npz"), profile="natural"), seed=0)
    assert b.input_shape == (3, 12, 12) and b.train.x.dtype == torch.uint8
    assert b.class_names == ["three", "seven"] and b.bounds == (0.0, 1.0) and len(b.mean) == 3
    assert b.augment.crop_padding == 1 and b.augment.flip
    assert torch.bincount(b.test.y).tolist() == [4, 2] and b.train_counts == [14, 7]
    assert np.array_equal(b.test.x[0].numpy(), x[0].transpose(2, 0, 1))
    feats = tmp_path / "feats"
    feats.mkdir()
    np.savez(feats / "train.npz", x=rng.random((20, 5)).astype(np.float32), y=np.arange(20) % 4)
    np.savez(feats / "test.npz", x=rng.random((8, 5)).astype(np.float32), y=np.arange(8) % 4)
    f = build_dataset(DataConfig(name="npz", root=str(feats), profile="natural", val_per_class=1), seed=0)
    assert (len(f.train), len(f.val), len(f.test)) == (16, 4, 8) and f.input_shape == (5,)
    assert f.bounds == (0.0, 1.0) and f.augment.crop_padding == 0


def test_npz_errors(tmp_path):
    np.savez(tmp_path / "a.npz", inputs=np.zeros((3, 2)), y=np.zeros(3))
    with pytest.raises(DataFormatError, match=r"expected arrays 'x' and 'y', found inputs, y"):
        build_dataset(DataConfig(name="npz", root=str(tmp_path / "a.npz")), seed=0)
    np.savez(tmp_path / "b.npz", x=np.zeros((3, 2)), y=np.zeros(4))
    with pytest.raises(DataFormatError, match=r"one label per row"):
        build_dataset(DataConfig(name="npz", root=str(tmp_path / "b.npz")), seed=0)
    (tmp_path / "c.npz").write_bytes(b"not a zip")
    with pytest.raises(DataFormatError, match=r"c.npz: not a readable .npz archive"):
        build_dataset(DataConfig(name="npz", root=str(tmp_path / "c.npz")), seed=0)
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 2)), y=np.array([0, 0, 0, 1]))
    with pytest.raises(ValueError, match=r"class 1 \(1\) has 1 samples.*leaves none for training"):
        build_dataset(DataConfig(name="npz", root=str(tmp_path / "d.npz"), test_per_class=1), seed=0)
