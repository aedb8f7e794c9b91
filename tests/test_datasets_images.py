"""celeba5, sun397, folder and imagenet-lt from miniature image trees (JPEG/PNG written with Pillow)."""

import numpy as np
import pytest
import torch

from major2minor.config import DataConfig
from major2minor.data import build_dataset
from major2minor.data.io import DataFormatError, DataNotFoundError
from major2minor.data.profiles import longtail_counts

Image = pytest.importorskip("PIL.Image")


@pytest.fixture(autouse=True)
def user_cache(tmp_path_factory, monkeypatch):
    """The decoded-array cache defaults to a per-user folder: point it at a temporary one, never ~/.cache."""
    folder = tmp_path_factory.mktemp("m2m-user-cache")
    monkeypatch.setenv("M2M_CACHE", str(folder))
    return folder


def write_image(path, size=(22, 18), color=None, seed=0, mode="RGB", fmt=None):
    """A small image; ``color`` fills it, else random pixels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    if color is not None:
        img = Image.new(mode, size, color)
    else:
        rng = np.random.default_rng(seed)
        shape = (h, w, 3) if mode == "RGB" else (h, w)
        img = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)
    img.save(path, format=fmt)
    return path


def striped(path, w=30, h=10):
    """Blue left/right thirds and a red centre square: the centre patch must come out red."""
    a = np.zeros((h, w, 3), np.uint8)
    a[:, :, 2] = 255
    a[:, w // 3 : 2 * w // 3] = (255, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path)


# ----------------------------------------------------------------------------------------------
# celeba5

CELEB_TRAIN = [4, 6, 5, 3, 2]


def make_celeba(root, list_dir="etc"):
    lines = {"train": [], "val": [], "test": []}
    n = 0
    for split, per_class in (("train", CELEB_TRAIN), ("val", [2] * 5), ("test", [2] * 5)):
        for label, k in enumerate(per_class):
            for _ in range(k):
                n += 1
                image_id = f"{n:06d}.jpg"
                write_image(root / "img_align_celeba" / image_id, size=(18, 22), seed=n)
                lines[split].append(f"/home/someone/data/CelebA/image64/{image_id} {label}\n")
    (root / list_dir).mkdir(parents=True, exist_ok=True)
    for split, rows in lines.items():
        (root / list_dir / f"celebA_{split}_orig.txt").write_text("".join(rows))


def test_celeba5_lists_images_cache(tmp_path, monkeypatch, user_cache):
    make_celeba(tmp_path)
    cfg = DataConfig(name="celeba5", root=str(tmp_path), profile="natural", workers=1)
    b = build_dataset(cfg, seed=0)
    assert b.train_counts == CELEB_TRAIN and b.num_classes == 5
    assert torch.bincount(b.val.y).tolist() == [2] * 5 and torch.bincount(b.test.y).tolist() == [2] * 5
    assert b.train.x.shape == (20, 3, 32, 32) and b.train.x.dtype == torch.uint8
    assert b.bounds == (0.0, 1.0) and b.mean is None and b.augment.crop_padding == 4
    caches = list(user_cache.glob("celeba5-32-*.npz"))  # the per-user cache ($M2M_CACHE), not the data folder
    assert len(caches) == 1 and not (tmp_path / ".m2m-cache").exists()
    # the second build reads the cache: decoding must not happen again
    from major2minor.data.datasets import celeba

    monkeypatch.setattr(celeba, "decode_images", lambda *a, **k: pytest.fail("decoded again"))
    b2 = build_dataset(cfg, seed=0)
    assert torch.equal(b.train.x, b2.train.x) and b.manifest()["checksum"] == b2.manifest()["checksum"]


def test_celeba5_image_size_cache_dir_and_profile(tmp_path):
    make_celeba(tmp_path, list_dir="celeba5-splits")
    cache = tmp_path / "elsewhere"
    b = build_dataset(
        DataConfig(
            name="celeba5", root=str(tmp_path), image_size=16, cache=str(cache), profile="longtail", ratio=2, n_max=4
        ),
        seed=0,
    )
    assert b.input_shape == (3, 16, 16) and list(cache.glob("celeba5-16-*.npz"))
    assert b.train_counts == longtail_counts(4, 5, 2) == [4, 3, 2, 2, 2]  # 4 * 2 ** -1 = 2 exactly (float int(): 1)


def test_celeba5_errors(tmp_path):
    with pytest.raises(DataNotFoundError, match=r"celebA_train_orig.txt.*alinlab/M2m"):
        build_dataset(DataConfig(name="celeba5", root=str(tmp_path)), seed=0)
    make_celeba(tmp_path)
    (tmp_path / "img_align_celeba" / "000003.jpg").unlink()
    with pytest.raises(DataNotFoundError, match=r"000003.jpg.*aligned CelebA image"):
        build_dataset(DataConfig(name="celeba5", root=str(tmp_path), profile="natural"), seed=0)
    (tmp_path / "etc" / "celebA_val_orig.txt").write_text("a.jpg 0\nb.jpg\n")
    with pytest.raises(DataFormatError, match=r"celebA_val_orig.txt, line 2: expected `path label`"):
        build_dataset(DataConfig(name="celeba5", root=str(tmp_path), profile="natural"), seed=0)


def test_celeba5_regenerated_split_follows_the_documented_rule(tmp_path):
    from major2minor.data.datasets.celeba import CLASS_NAMES, read_list, regenerate_splits

    attrs = ["5_o_Clock_Shadow", "Bald", "Bangs", "Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair", "Male"]
    rows = []
    rng = np.random.default_rng(0)
    for i in range(1, 301):
        hair = i % 6  # 0..4: exactly one hair attribute; 5: two of them (dropped)
        v = {a: "-1" for a in attrs}
        v["Male"] = "1" if rng.random() < 0.5 else "-1"
        if hair < 5:
            v[CLASS_NAMES[hair]] = "1"
        else:
            v["Black_Hair"] = v["Gray_Hair"] = "1"
        rows.append(f"{i:06d}.jpg " + " ".join(f"{v[a]:>2}" for a in attrs))
    attr = tmp_path / "list_attr_celeba.txt"
    attr.write_text(f"300\n{' '.join(attrs)}\n" + "\n".join(rows) + "\n")
    counts = regenerate_splits(attr, tmp_path / "out", val_per_class=3, test_per_class=5, subsample=4)
    # 50 images per class: 3 val, 5 test, every 4th of the remaining 42 -> 11 train
    assert counts == {"train": [11] * 5, "val": [3] * 5, "test": [5] * 5}
    ids, labels = read_list(tmp_path / "out" / "celebA_train_orig.txt")
    gray = [i for i, y in zip(ids, labels) if y == 0]
    # class 0 (Gray_Hair) = ids with i % 6 == 0 ... i.e. 6, 12, ...; after 8 held out, every 4th
    assert gray[:2] == [f"{6 * 9:06d}.jpg", f"{6 * 13:06d}.jpg"]


# ----------------------------------------------------------------------------------------------
# sun397


def make_sun(root):
    tree = root / "SUN397"
    for cls, n in (("a/abbey", 8), ("b/bakery/shop", 7), ("c/castle", 6)):
        for j in range(n):
            write_image(tree / cls / f"sun_{j:03d}.jpg", size=(40, 30), seed=j + 100 * n)
    striped(tree / "c" / "castle" / "sun_zzz.png")  # sorted last: a training image
    (tree / "README.txt").write_text("not an image")
    return tree


def test_sun397_tree_split_and_centre_patch(tmp_path):
    tree = make_sun(tmp_path)
    cfg = DataConfig(name="sun397", root=str(tmp_path), profile="natural", val_per_class=1, test_per_class=2)
    b = build_dataset(cfg, seed=0)
    assert b.class_names == ["a/abbey", "b/bakery/shop", "c/castle"]
    assert b.train_counts == [5, 4, 4]
    assert torch.bincount(b.val.y).tolist() == [1, 1, 1] and torch.bincount(b.test.y).tolist() == [2, 2, 2]
    assert b.train.x.shape[1:] == (3, 32, 32) and b.bounds == (0.0, 1.0)
    assert len(b.mean) == 3 and all(0 < s < 1 for s in b.std)
    red = b.train.x[-1].float() / 255  # sun_zzz.png, the last training image of the last class
    assert red[0].mean() > 0.9 and red[2].mean() < 0.1
    # deterministic: same split and pixels without any seed dependence
    b2 = build_dataset(
        DataConfig(name="sun397", root=str(tree), profile="natural", val_per_class=1, test_per_class=2), seed=5
    )
    assert torch.equal(b.train.x, b2.train.x) and torch.equal(b.test.y, b2.test.y)
    # held-out images are the first in sorted name order
    assert b.info["indices"]["test"][:2] == [0, 1] and b.info["indices"]["val"][0] == 2


def test_sun397_too_small_class_and_missing_tree(tmp_path):
    make_sun(tmp_path)
    with pytest.raises(DataFormatError, match=r"class 'a/abbey' has 8 images.*data.test_per_class=40"):
        build_dataset(DataConfig(name="sun397", root=str(tmp_path), profile="natural"), seed=0)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataNotFoundError, match=r"SUN397"):
        build_dataset(DataConfig(name="sun397", root=str(empty)), seed=0)


# ----------------------------------------------------------------------------------------------
# folder


def test_folder_single_tree_grayscale_holdout(tmp_path):
    for j in range(10):
        write_image(tmp_path / "cat" / f"{j}.png", size=(12, 12), mode="L", seed=j)
    for j in range(6):
        write_image(tmp_path / "dog" / f"{j}.png", size=(12, 12), mode="L", seed=50 + j)
    b = build_dataset(DataConfig(name="folder", root=str(tmp_path), profile="natural"), seed=0)
    assert b.class_names == ["cat", "dog"] and b.input_shape == (1, 32, 32)
    # test = round(20%): 2 / 1, val = round(10%): 1 / 1, rest train
    assert torch.bincount(b.test.y).tolist() == [2, 1] and torch.bincount(b.val.y).tolist() == [1, 1]
    assert b.train_counts == [7, 4]
    b2 = build_dataset(
        DataConfig(
            name="folder",
            root=str(tmp_path),
            profile="longtail",
            ratio=2,
            n_max=4,
            image_size=8,
            val_per_class=1,
            test_per_class=1,
        ),
        seed=0,
    )
    assert b2.train_counts == [4, 2] and b2.input_shape == (1, 8, 8)


def test_folder_split_trees_and_unknown_class(tmp_path):
    for split, n in (("train", 5), ("val", 2), ("test", 3)):
        for cls in ("a", "b", "c"):
            for j in range(n):
                write_image(tmp_path / split / cls / f"{j}.jpg", seed=j)
    b = build_dataset(DataConfig(name="folder", root=str(tmp_path), profile="natural"), seed=0)
    assert (len(b.train), len(b.val), len(b.test)) == (15, 6, 9) and b.input_shape == (3, 32, 32)
    write_image(tmp_path / "test" / "zebra" / "0.jpg")
    with pytest.raises(DataFormatError, match=r"zebra.*no counterpart"):
        build_dataset(DataConfig(name="folder", root=str(tmp_path), profile="natural"), seed=0)


def test_folder_broken_image_names_the_file(tmp_path):
    for cls in ("a", "b"):
        for j in range(4):
            write_image(tmp_path / cls / f"{j}.png", seed=j)
    (tmp_path / "b" / "2.png").write_bytes(b"garbage")
    with pytest.raises(DataFormatError, match=r"2.png: cannot decode the image"):
        build_dataset(
            DataConfig(name="folder", root=str(tmp_path), profile="natural", cache=str(tmp_path / "c")), seed=0
        )


# ----------------------------------------------------------------------------------------------
# imagenet-lt


def make_imagenet_lt(root):
    lines = {"train": [], "val": [], "test": []}
    for c, n in enumerate((6, 4, 2)):
        wnid = f"n0000000{c}"
        for j in range(n + 1):  # the last train-folder image goes to the val list
            rel = f"train/{wnid}/{wnid}_{j}.JPEG"
            write_image(root / rel, size=(48, 36), seed=10 * c + j, fmt="JPEG")
            lines["train" if j < n else "val"].append(f"{rel} {c}\n")
        for j in range(2):
            rel = f"val/ILSVRC2012_val_{c}{j}.JPEG"
            write_image(root / rel, size=(36, 48), seed=100 + 10 * c + j, fmt="JPEG")
            lines["test"].append(f"{rel} {c}\n")
    (root / "ImageNet_LT").mkdir()
    for split, rows in lines.items():
        (root / "ImageNet_LT" / f"ImageNet_LT_{split}.txt").write_text("".join(rows))


def test_imagenet_lt_in_memory(tmp_path):
    make_imagenet_lt(tmp_path)
    b = build_dataset(DataConfig(name="imagenet-lt", root=str(tmp_path), profile="natural", image_size=32), seed=0)
    assert b.train_counts == [6, 4, 2] and len(b.val) == 3 and len(b.test) == 6
    assert b.class_names == ["n00000000", "n00000001", "n00000002"]
    assert b.input_shape == (3, 32, 32) and b.mean == (0.485, 0.456, 0.406) and b.bounds == (0.0, 1.0)
    assert b.augment.crop_padding == 4 and b.augment.flip


def test_imagenet_lt_streaming_loaders(tmp_path):
    from major2minor.data.datasets.imagenet_lt import imagenet_lt_loaders

    make_imagenet_lt(tmp_path)
    cfg = DataConfig(name="imagenet-lt", root=str(tmp_path), profile="natural", image_size=24, workers=0)
    s = imagenet_lt_loaders(cfg, batch_size=5, seed=3)
    assert s.train_counts == [6, 4, 2] and s.num_classes == 3 and s.input_shape == (3, 24, 24)
    x, y = next(iter(s.train))
    assert x.shape == (5, 3, 24, 24) and x.dtype == torch.uint8 and y.dtype == torch.int64
    again = next(iter(imagenet_lt_loaders(cfg, batch_size=5, seed=3).train))
    assert torch.equal(x, again[0]) and torch.equal(y, again[1])
    other = next(iter(imagenet_lt_loaders(cfg, batch_size=5, seed=4).train))
    assert not torch.equal(x, other[0])
    xt, yt = next(iter(s.test))
    assert xt.shape == (5, 3, 24, 24) and yt.tolist() == [0, 0, 1, 1, 2]
    assert torch.equal(xt, next(iter(s.test))[0])  # evaluation crops are fixed
    epoch2 = next(iter(s.train))  # the same loader: a new epoch, new draws
    assert not torch.equal(x, epoch2[0])


def test_imagenet_lt_workers_and_errors(tmp_path):
    from major2minor.data.datasets.imagenet_lt import imagenet_lt_loaders

    make_imagenet_lt(tmp_path)
    cfg = DataConfig(name="imagenet-lt", root=str(tmp_path), profile="natural", image_size=16, workers=1)
    x, y = next(iter(imagenet_lt_loaders(cfg, batch_size=12, seed=0).train))
    assert x.shape == (12, 3, 16, 16) and sorted(y.tolist()) == [0] * 6 + [1] * 4 + [2] * 2
    cfg.workers = 0  # the same batch without worker processes: augmentation is seeded per sample
    x0, y0 = next(iter(imagenet_lt_loaders(cfg, batch_size=12, seed=0).train))
    assert torch.equal(x, x0) and torch.equal(y, y0)
    with pytest.raises(DataNotFoundError, match=r"ImageNet_LT_train.txt.*OLTR"):
        build_dataset(DataConfig(name="imagenet-lt", root=str(tmp_path / "train")), seed=0)
    (tmp_path / "ImageNet_LT" / "ImageNet_LT_val.txt").write_text("train/x.JPEG zero\n")
    with pytest.raises(DataFormatError, match=r"ImageNet_LT_val.txt, line 1: expected `relative/path label`"):
        build_dataset(DataConfig(name="imagenet-lt", root=str(tmp_path), profile="natural"), seed=0)


def test_random_resized_crop_box_is_inside_the_image():
    from major2minor.data.datasets.imagenet_lt import RandomResizedCropFlip

    t = RandomResizedCropFlip(16)
    g = torch.Generator().manual_seed(0)
    for w, h in ((100, 60), (20, 200), (16, 16)):
        for _ in range(20):
            left, top, bw, bh = t.box(w, h, g)
            assert 0 <= left and 0 <= top and left + bw <= w and top + bh <= h and bw > 0 and bh > 0
    img = Image.new("RGB", (50, 30))
    assert t(img).size == (16, 16)
