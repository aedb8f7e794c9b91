"""`m2m data info` / `m2m data prepare`, checksums and safe extraction (no network: file:// URLs)."""

import dataclasses
import hashlib
import io
import json
import pickle
import tarfile

import numpy as np
import pytest

from major2minor.cli import main
from major2minor.data.io import DataFormatError, download, md5sum, safe_extract


def make_cifar10(root, per_class=24, test_per_class=20):
    """Miniature CIFAR-10 pickles in the official format (see test_datasets_cifar for the full fixture)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    y = rng.permutation(np.repeat(np.arange(10), per_class))
    x = rng.integers(0, 256, size=(len(y), 3072), dtype=np.uint8)
    for b, (xs, ys) in enumerate(zip(np.array_split(x, 5), np.array_split(y, 5)), 1):
        with open(folder / f"data_batch_{b}", "wb") as fh:
            pickle.dump({b"labels": ys.tolist(), b"data": xs}, fh)
    yt = rng.permutation(np.repeat(np.arange(10), test_per_class))
    with open(folder / "test_batch", "wb") as fh:
        pickle.dump({b"labels": yt.tolist(), b"data": rng.integers(0, 256, (len(yt), 3072), dtype=np.uint8)}, fh)


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_info_on_user_arrays_prints_counts_and_writes_the_manifest(tmp_path, capsys):
    y = np.repeat([0, 1, 2], [30, 12, 6])
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(0).random((48, 3)).astype(np.float32), y=y)
    manifest = tmp_path / "out" / "manifest.json"
    code, out, err = run(
        capsys,
        "data",
        "info",
        "npz",
        "--root",
        str(tmp_path / "d.npz"),
        "--manifest",
        str(manifest),
        "val_per_class=1",
        "test_per_class=2",
    )
    assert code == 0, err
    assert "npz: 3 classes" in out and "splits: train 39, val 3, test 6" in out
    assert "imbalance ratio 9.0" in out and "[27, 9, 3]" in out
    full = json.loads(manifest.read_text())
    assert len(full["indices"]["train"]) == 39 and full["train_counts"] == [27, 9, 3] and full["checksum"]
    code, out, _ = run(capsys, "data", "info", "npz", "--root", str(tmp_path / "d.npz"), "--json")
    assert json.loads(out)["indices"]["train"] == "<34 indices>"  # 20% test (6+2+1), 10% val (3+1+1)


def test_info_starts_from_the_recipe_and_takes_overrides(tmp_path, capsys):
    make_cifar10(tmp_path)
    code, out, err = run(capsys, "data", "info", "cifar10-lt", "--root", str(tmp_path), "n_max=20", "data.ratio=10")
    assert code == 0, err
    assert "cifar10-lt: 10 classes, input (3, 32, 32)" in out and "imbalance ratio 10.0" in out
    code, out, err = run(capsys, "data", "info", "cifar10-lt", "--root", str(tmp_path))  # recipe: n_max 5000
    assert code == 2 and "data.n_max=5000" in err
    code, _, err = run(capsys, "data", "info", "cifar10", "--root", str(tmp_path))
    assert code == 2 and "data.name='cifar10' is not a known data set" in err and "cifar10-lt" in err


def test_missing_data_is_one_clear_line(tmp_path, capsys):
    code, out, err = run(capsys, "data", "info", "reuters", "--root", str(tmp_path))
    assert code == 2 and err.startswith("m2m: error: ") and "r52-train.txt" in err and "Traceback" not in err


def _tar_of(folder, archive):
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)


def test_prepare_cifar_downloads_verifies_and_extracts(tmp_path, capsys, monkeypatch):
    from major2minor.data.datasets import cifar

    src = tmp_path / "src"
    make_cifar10(src)
    archive = tmp_path / "cifar-10-python.tar.gz"
    _tar_of(src / "cifar-10-batches-py", archive)
    folder = src / "cifar-10-batches-py"
    spec = dataclasses.replace(
        cifar.CIFAR10,
        url=archive.as_uri(),
        archive_md5=md5sum(archive),
        train_files=tuple((f, md5sum(folder / f)) for f, _ in cifar.CIFAR10.train_files),
        test_files=(("test_batch", md5sum(folder / "test_batch")),),
    )
    monkeypatch.setitem(cifar.SPECS, "cifar10-lt", spec)
    root = tmp_path / "data"
    code, out, err = run(capsys, "data", "prepare", "cifar10-lt", "--root", str(root), "n_max=20", "ratio=10")
    assert code == 0, err
    assert "downloading file://" in out and "checksums OK" in out and "ready" in out
    assert (root / "cifar-10-batches-py" / "data_batch_5").exists()
    # a corrupted pickle is caught on the next prepare
    with open(root / "cifar-10-batches-py" / "data_batch_2", "ab") as fh:
        fh.write(b"x")
    code, out, err = run(capsys, "data", "prepare", "cifar10-lt", "--root", str(root), "n_max=20", "ratio=10")
    assert code == 2 and "data_batch_2: MD5" in err and "--no-verify" in err


def test_prepare_cifar_with_unofficial_files_needs_no_verify(tmp_path, capsys):
    make_cifar10(tmp_path)
    code, _, err = run(capsys, "data", "prepare", "cifar10-lt", "--root", str(tmp_path), "n_max=20", "ratio=10")
    assert code == 2 and "does not match the official" in err
    code, out, err = run(
        capsys, "data", "prepare", "cifar10-lt", "--root", str(tmp_path), "--no-verify", "n_max=20", "ratio=10"
    )
    assert code == 0, err


def test_prepare_celeba5_regenerates_missing_lists(tmp_path, capsys):
    from major2minor.data.datasets.celeba import CLASS_NAMES

    header = ["Bald", "Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair", "Smiling"]
    rows = []
    for i in range(1, 5 * 160 + 1):
        v = {a: "-1" for a in header}
        v[CLASS_NAMES[i % 5]] = "1"
        rows.append(f"{i:06d}.jpg " + " ".join(v[a] for a in header))
    (tmp_path / "list_attr_celeba.txt").write_text(f"{len(rows)}\n{' '.join(header)}\n" + "\n".join(rows) + "\n")
    code, out, err = run(capsys, "data", "prepare", "celeba5", "--root", str(tmp_path))
    assert "regenerated the CelebA-5 split lists" in out and "'val': [50, 50, 50, 50, 50]" in out
    assert (tmp_path / "celeba5-splits" / "celebA_train_orig.txt").exists()
    assert code == 2 and "aligned CelebA images" in err  # the images themselves are not there


def test_download_checks_md5(tmp_path):
    src = tmp_path / "file.bin"
    src.write_bytes(b"hello")
    good = hashlib.md5(b"hello").hexdigest()
    out = download(src.as_uri(), tmp_path / "dl" / "file.bin", good, progress=lambda s: None)
    assert out.read_bytes() == b"hello"
    with pytest.raises(DataFormatError, match="checksum mismatch"):
        download(src.as_uri(), tmp_path / "dl2" / "file.bin", "0" * 32, progress=lambda s: None)
    assert not (tmp_path / "dl2" / "file.bin").exists()


def test_safe_extract_refuses_path_traversal(tmp_path):
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo("../evil.txt")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    with pytest.raises(DataFormatError, match="outside"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()
