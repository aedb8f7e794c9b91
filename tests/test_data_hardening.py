"""Bad inputs named in one line: garbled Twitter files, CSV/NPZ labels and features, the image-decode cache
(content key, per-user location) and truncated per-epoch logs."""

import os

import numpy as np
import pytest
import torch

from major2minor.config import DataConfig
from major2minor.data import build_dataset
from major2minor.data.io import DataFormatError

# ----------------------------------------------------------------------------------------------
# twitter-pos: files that are not UTF-8 text

TWEETS = "i\tO\nlove\tV\nthis\tD\n\nsong\tN\nis\tV\nill\tA\n"


@pytest.fixture
def tweets(tmp_path):
    for name in ("tweets-train.txt", "tweets-dev.txt", "tweets-devtest.txt"):
        (tmp_path / name).write_text(TWEETS, encoding="utf-8")
    return tmp_path


def tw(root, **kw):
    return DataConfig(name="twitter-pos", root=str(root), profile="natural", **kw)


def test_twitter_garbled_file_names_file_line_and_format(tweets):
    (tweets / "tweets-train.txt").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(
        DataFormatError,
        match=r"tweets-train\.txt, line 1 \(byte offset 0: b'\\xff\\xfe\\x00b'\): not UTF-8 text .*"
        r"`token<TAB>tag` a line, a blank line between tweets.*Get the Twitter POS data",
    ):
        build_dataset(tw(tweets), seed=0)
    # a bad byte further down: its line and byte offset
    good = TWEETS.encode()
    (tweets / "tweets-devtest.txt").write_bytes(good + b"caf\xe9\tN\n")
    (tweets / "tweets-train.txt").write_text(TWEETS, encoding="utf-8")
    with pytest.raises(DataFormatError, match=rf"tweets-devtest\.txt, line 8 \(byte offset {len(good) + 3}: "):
        build_dataset(tw(tweets), seed=0)


def test_twitter_embeddings_file_not_utf8_text(tweets, tmp_path):
    emb = tmp_path / "emb.txt"
    emb.write_bytes(b"\xff\xfe\x00bad")  # a UTF-16 byte-order mark
    with pytest.raises(DataFormatError, match=r"emb\.txt: a UTF-16 text file .*must be a UTF-8 text word-vector"):
        build_dataset(tw(tweets, embeddings=str(emb)), seed=0)
    emb.write_bytes(b"2 3\ni \x00\x00\x80?\xcd\xcc\x8c?\n")  # word2vec .bin: binary floats after the word
    with pytest.raises(DataFormatError, match=r"emb\.txt, line 2: not UTF-8 text .*word2vec \.bin"):
        build_dataset(tw(tweets, embeddings=str(emb)), seed=0)
    # a stray byte inside a word stays tolerated (that word just matches no token), as before
    emb.write_bytes(b"caf\xe9 1 1 1\nlove 2 2 2\n")
    b = build_dataset(tw(tweets, embeddings=str(emb)), seed=0)
    assert b.input_shape == (3,) and torch.all(b.train.x[1] == 2.0)


# ----------------------------------------------------------------------------------------------
# csv / npz


def write_csv(path, labels, features=None, header="a,b,label"):
    rng = np.random.default_rng(0)
    x = rng.random((len(labels), 2)) if features is None else features
    path.write_text(header + "\n" + "".join(f"{float(r[0])!r},{float(r[1])!r},{y}\n" for r, y in zip(x, labels)))
    return path


def csv_cfg(path, **kw):
    return DataConfig(name="csv", root=str(path), profile="natural", **kw)


def test_csv_numerically_equal_labels_are_one_class(tmp_path):
    labels = ["1", "1.0", "2", "10.0", "01", "2.00", "10"] * 6
    b = build_dataset(csv_cfg(write_csv(tmp_path / "d.csv", labels)), seed=0)
    assert b.class_names == ["1", "2", "10"] and b.num_classes == 3  # numeric order, integer names
    assert sum(b.train_counts) + len(b.val) + len(b.test) == 42
    assert torch.bincount(torch.cat([b.train.y, b.val.y, b.test.y])).tolist() == [18, 12, 12]
    # a validation/test file's labels are read the same way
    folder = tmp_path / "split"
    folder.mkdir()
    write_csv(folder / "train.csv", ["0", "1"] * 10)
    write_csv(folder / "val.csv", ["0.0", "1.0"])
    write_csv(folder / "test.csv", ["0", "1.0"])
    s = build_dataset(csv_cfg(folder), seed=0)
    assert s.class_names == ["0", "1"] and s.val.y.tolist() == [0, 1] and s.test.y.tolist() == [0, 1]
    # text labels are used as they are
    t = build_dataset(csv_cfg(write_csv(tmp_path / "t.csv", ["1", "1.0", "x"] * 10)), seed=0)
    assert t.class_names == ["1", "1.0", "x"]


def test_csv_continuous_label_column_is_refused(tmp_path):
    rng = np.random.default_rng(1)
    prices = [f"{v:.2f}" for v in rng.random(40) * 3]
    path = write_csv(tmp_path / "r.csv", prices)
    with pytest.raises(
        DataFormatError,
        match=rf"r\.csv: label column 'label' looks like a regression target, not classes \(it holds values that "
        rf"are not whole numbers, e\.g\. .*; values: {prices[0]}, {prices[1]}, .*set data\.label_column=NAME",
    ):
        build_dataset(csv_cfg(path), seed=0)
    ids = write_csv(tmp_path / "ids.csv", [str(i) for i in range(120)])
    with pytest.raises(
        DataFormatError, match=r"'label' looks like a regression target, not classes \(120 distinct values in 120 rows"
    ):
        build_dataset(csv_cfg(ids), seed=0)
    missing = write_csv(tmp_path / "m.csv", ["0", "1"] * 10 + [""] + ["nan"])
    with pytest.raises(
        DataFormatError, match=r"m\.csv: label column 'label' holds '' in data row 21 \(a missing label"
    ):
        build_dataset(csv_cfg(missing), seed=0)


def test_csv_nonfinite_features_named(tmp_path):
    x = np.random.default_rng(0).random((20, 2))
    x[5, 1] = np.inf
    x[7, 0] = np.nan
    path = write_csv(tmp_path / "f.csv", ["a", "b"] * 10, features=x)
    with pytest.raises(
        DataFormatError, match=r"f\.csv: features contain 2 NaN or infinite value\(s\), the first at line 7, column 'b'"
    ):
        build_dataset(csv_cfg(path), seed=0)


def test_npz_nonfinite_features_and_labels_refused(tmp_path):
    x = np.random.default_rng(0).random((20, 3)).astype(np.float32)
    x[4, 2], x[9, 0], x[9, 1] = np.nan, np.inf, -np.inf
    np.savez(tmp_path / "a.npz", x=x, y=np.arange(20) % 2)
    with pytest.raises(
        DataFormatError, match=r"a\.npz: array x holds 3 NaN or infinite value\(s\), the first in row x\[4\]"
    ):
        build_dataset(DataConfig(name="npz", root=str(tmp_path / "a.npz"), profile="natural"), seed=0)
    img = np.random.default_rng(0).random((20, 1, 4, 4))
    img[3, 0, 1, 1] = np.nan  # float images: NaN used to slip through the [0, 1] range check
    np.savez(tmp_path / "i.npz", x=img, y=np.arange(20) % 2)
    with pytest.raises(DataFormatError, match=r"i\.npz: array x holds 1 NaN .* row x\[3\]"):
        build_dataset(DataConfig(name="npz", root=str(tmp_path / "i.npz"), profile="natural"), seed=0)
    good = np.random.default_rng(0).random((20, 3))
    np.savez(tmp_path / "y.npz", x=good, y=np.r_[np.zeros(10), np.ones(9), np.nan])
    with pytest.raises(DataFormatError, match=r"y\.npz: y holds 1 NaN or infinite label\(s\) \(first in row 19\)"):
        build_dataset(DataConfig(name="npz", root=str(tmp_path / "y.npz"), profile="natural"), seed=0)
    np.savez(tmp_path / "r.npz", x=good, y=np.linspace(0, 1, 20))
    with pytest.raises(
        DataFormatError, match=r"r\.npz: y looks like a regression target, not classes .*values: 0, 0\.0526316"
    ):
        build_dataset(DataConfig(name="npz", root=str(tmp_path / "r.npz"), profile="natural"), seed=0)
    # integer-valued float labels stay valid, with their names as before
    np.savez(tmp_path / "ok.npz", x=good, y=(np.arange(20) % 2).astype(float))
    ok = build_dataset(DataConfig(name="npz", root=str(tmp_path / "ok.npz"), profile="natural"), seed=0)
    assert ok.class_names == ["0.0", "1.0"]


def test_held_out_class_too_small_is_named(tmp_path):
    # 'rare' has 4 samples: the default round(10% of 4) = 0 validation samples
    path = write_csv(tmp_path / "s.csv", ["big"] * 30 + ["rare"] * 4)
    with pytest.raises(
        ValueError,
        match=r"csv: class 1 \(rare\) has 4 samples in .*s\.csv, too few to hold out a validation sample \(the "
        r"default round\(10% of 4\) = 0\); every class needs at least one validation sample\. Set "
        r"data\.val_per_class=1 .*a separate val\.csv file\.",
    ):
        build_dataset(csv_cfg(path), seed=0)
    b = build_dataset(csv_cfg(path, val_per_class=1), seed=0)  # the fix the message names
    assert torch.bincount(b.val.y).tolist() == [1, 1] and torch.bincount(b.test.y).tolist() == [6, 1]
    # 2 samples: no test sample either (round(20% of 2) = 0); every class this small used to give an
    # empty validation split, which failed only after training
    np.savez(tmp_path / "t.npz", x=np.zeros((4, 2)), y=np.array([0, 0, 1, 1]))
    with pytest.raises(
        ValueError,
        match=r"npz: class 0 \(0\) has 2 samples .*a validation sample .* or a test sample \(the default round\(20% "
        r"of 2\) = 0\) \(and 1 more class.*Set data.val_per_class=1 and data.test_per_class=1",
    ):
        build_dataset(DataConfig(name="npz", root=str(tmp_path / "t.npz"), profile="natural"), seed=0)
    # a split given as its own file is not held out, so small classes are fine there
    folder = tmp_path / "own"
    folder.mkdir()
    write_csv(folder / "train.csv", ["x"] * 8 + ["y"] * 2)
    write_csv(folder / "val.csv", ["x", "y"])
    write_csv(folder / "test.csv", ["x", "y"])
    assert build_dataset(csv_cfg(folder), seed=0).train_counts == [8, 2]


# ----------------------------------------------------------------------------------------------
# the image-decode cache


def bmp(path, value, size=(10, 10)):
    """An uncompressed BMP: the same size always gives the same number of bytes, whatever the pixels."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, 255 - value, value // 2)).save(path, format="BMP")
    return path


@pytest.fixture
def image_folder(tmp_path):
    pytest.importorskip("PIL")
    root = tmp_path / "images"
    for c, cls in enumerate(("cat", "dog")):
        for j in range(6):
            bmp(root / cls / f"{j}.bmp", 20 * j + c)
    return root


@pytest.fixture
def user_cache(tmp_path, monkeypatch):
    folder = tmp_path / "user-cache"
    monkeypatch.setenv("M2M_CACHE", str(folder))
    return folder


def folder_cfg(root, **kw):
    return DataConfig(name="folder", root=str(root), profile="natural", val_per_class=1, test_per_class=1, **kw)


def test_same_size_replacement_is_decoded_again(image_folder, user_cache):
    from major2minor.data.datasets import folder

    b = build_dataset(folder_cfg(image_folder), seed=0)
    target = image_folder / "dog" / "5.bmp"  # the last training image
    before = target.stat()
    bmp(target, 250)  # different pixels, identical byte size ...
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))  # ... and the old mtime (as cp -p / rsync -a)
    assert target.stat().st_size == before.st_size and target.stat().st_mtime_ns == before.st_mtime_ns
    b2 = build_dataset(folder_cfg(image_folder), seed=0)
    assert not torch.equal(b.train.x[-1], b2.train.x[-1])
    assert b2.train.x[-1, 0].float().mean() == pytest.approx(250, abs=1)  # the new image, not the stale cache
    assert torch.equal(b.train.x[:-1], b2.train.x[:-1])
    # unchanged folder: the cache is reused, nothing decoded
    real = folder.decode_images
    folder.decode_images = lambda *a, **k: pytest.fail("decoded again although nothing changed")
    try:
        b3 = build_dataset(folder_cfg(image_folder), seed=0)
    finally:
        folder.decode_images = real
    assert torch.equal(b2.train.x, b3.train.x)


def test_file_signature_covers_times_and_a_content_sample(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from major2minor.data import io

    files = []
    for i in range(100):
        files.append(tmp_path / f"{i:03d}.bin")
        files[-1].write_bytes(bytes([i]) * 10)
    sample = io.sample_indices(len(files))
    assert sample[0] == 0 and sample[-1] == 99 and len(sample) == io.CACHE_SAMPLE
    assert io.sample_indices(5) == [0, 1, 2, 3, 4]
    sig = io.file_signature(files)
    assert io.file_signature(files) == sig  # deterministic, reading changes nothing
    os.utime(files[50], ns=(0, 123))  # a changed mtime of a file outside the sample
    assert 50 not in sample and io.file_signature(files) != sig
    # with size and times frozen, the bytes of sampled files still count (and, as documented, only those)
    frozen = SimpleNamespace(st_size=10, st_mtime_ns=1, st_ctime_ns=1)
    monkeypatch.setattr(io.os, "stat", lambda p: frozen)
    sig = io.file_signature(files)
    files[sample[3]].write_bytes(b"x" * 10)
    assert io.file_signature(files) != sig
    sig = io.file_signature(files)
    files[50].write_bytes(b"y" * 10)
    assert io.file_signature(files) == sig


def test_cache_location_per_user_never_in_the_data_folder(image_folder, tmp_path, monkeypatch):
    from major2minor.data.io import cache_dir

    monkeypatch.setenv("M2M_CACHE", str(tmp_path / "env"))
    build_dataset(folder_cfg(image_folder), seed=0)
    assert list((tmp_path / "env").glob("folder-train-32-*.npz"))
    assert not (image_folder / ".m2m-cache").exists()
    assert cache_dir(str(tmp_path / "explicit")) == tmp_path / "explicit"  # data.cache still overrides
    monkeypatch.delenv("M2M_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir(None) == tmp_path / "xdg" / "major2minor"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")  # the XDG rule: only absolute paths count
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir(None) == tmp_path / "home" / ".cache" / "major2minor"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir(None) == tmp_path / "home" / ".cache" / "major2minor"


def test_unwritable_cache_only_warns(image_folder, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("M2M_CACHE", str(blocker / "cache"))
    with pytest.warns(UserWarning, match=r"could not write the decoded-array cache .*data\.cache=DIR \(or M2M_CACHE"):
        b = build_dataset(folder_cfg(image_folder), seed=0)
    assert b.train.x.shape == (8, 3, 32, 32)


# ----------------------------------------------------------------------------------------------
# truncated log.csv


def test_truncated_log_names_the_file(tmp_path):
    from major2minor.figures import plot_training_curves, read_log

    log = tmp_path / "log.csv"
    log.write_text("")
    with pytest.raises(
        ValueError, match=r"log\.csv: the per-epoch log is empty .*interrupted: resume it with --resume"
    ):
        read_log(log)
    log.write_text("epoch,train_loss,val_bacc\r\n")
    with pytest.raises(ValueError, match=r"log\.csv: the per-epoch log has a header but no rows; .*--resume"):
        read_log(log)
    log.write_text("epoch,train_loss,val_bacc\r\n0,2.1,0.3\r\n1,1.9")
    with pytest.raises(ValueError, match=r"log\.csv, line 3: a half-written last line \(2 fields, the header has 3\)"):
        read_log(log)
    pytest.importorskip("matplotlib")
    with pytest.raises(ValueError, match=rf"{tmp_path.name}/log\.csv, line 3: .*--resume"):
        plot_training_curves(log, tmp_path / "curves.png")  # used to say only "logs hold no rows"
    log.write_text("epoch,train_loss,val_bacc\r\n0,2.1,\r\n")
    assert read_log(log) == [{"epoch": 0.0, "train_loss": 2.1, "val_bacc": None}]
