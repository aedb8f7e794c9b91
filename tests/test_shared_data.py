"""Checks against the real Reuters R52 and Twitter POS files, when ``../shared/data`` exists.

The folder sits next to the repository root (``<repo>/../shared/data``); a user's checkout does not
have it, so these tests skip with a message there.  How the numbers are counted:

* Reuters: "training documents" are the lines of ``r52-train.txt`` whose topic has >= 5 test
  documents (36 topics), i.e. train + validation together, before the 10% validation hold-out; the
  imbalance ratio is max / min over those per-topic counts (earn 2,840 / fuel 4 = 710).
* Twitter: training tokens are the tokens of ``tweets-train.txt`` whose tag occurs in the test file
  (23 tags; M and Y have no test tokens); ratio = max / min of their per-tag counts (V 2,219 / X 15).
"""

from pathlib import Path

import pytest

from major2minor.config import DataConfig
from major2minor.data import build_dataset

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared(name):
    folder = SHARED / name
    if not folder.is_dir():
        pytest.skip(
            f"{folder} not found: the real-data checks need the development copy of the data "
            "(../shared/data next to the repository); skipped on a plain checkout"
        )
    return folder


def test_reuters_r52_real_files():
    b = build_dataset(DataConfig(name="reuters", root=str(shared("reuters-r52")), profile="natural"), seed=0)
    file_counts = b.info["file_train_counts"]
    ratio = b.info["file_imbalance_ratio"]
    print(
        f"\nreuters: {b.num_classes} classes, {sum(file_counts)} training documents (train {len(b.train)} + "
        f"val {len(b.val)}), imbalance ratio {ratio:.0f} (max {max(file_counts)} / min {min(file_counts)}); "
        f"test {len(b.test)} documents; input {b.input_shape[0]}-d binary; after the seed-0 validation "
        f"hold-out the training split's ratio is {b.manifest()['imbalance_ratio']:.0f}"
    )
    assert b.num_classes == 36
    assert sum(file_counts) == 6436 and len(b.train) + len(b.val) == 6436
    assert ratio == 710
    assert b.input_shape == (1000,) and len(b.val) == 644 and len(b.test) == 2530


def test_twitter_pos_real_files():
    b = build_dataset(DataConfig(name="twitter-pos", root=str(shared("twitter-pos")), profile="natural"), seed=0)
    counts = b.train_counts
    ratio = max(counts) / min(counts)
    print(
        f"\ntwitter-pos: {b.num_classes} classes, {len(b.train)} training tokens, imbalance ratio {ratio:.2f} "
        f"(max {max(counts)} / min {min(counts)}); dropped tags {b.info['dropped_tags']}; "
        f"val {len(b.val)}, test {len(b.test)} tokens; embeddings: {b.info['embeddings']}"
    )
    assert b.num_classes == 23 and b.info["dropped_tags"] == ["M", "Y"]
    assert len(b.train) == 14614
    assert round(ratio) == 148
    assert (len(b.val), len(b.test)) == (4823, 7152) and b.input_shape == (50,)


def test_celeba5_real_split_lists():
    """The authors' lists parse (the images themselves are not in ../shared/data)."""
    import numpy as np

    from major2minor.data.datasets.celeba import LIST_FILES, read_list

    folder = shared("celeba5-splits")
    counts = {
        split: np.bincount(read_list(folder / name)[1], minlength=5).tolist() for split, name in LIST_FILES.items()
    }
    print(f"\nceleba5 split lists: {counts}")
    assert counts == {"train": [424, 2423, 1499, 2078, 227], "val": [50] * 5, "test": [100] * 5}
