import torch

from major2minor.config import DataConfig
from major2minor.data import Augment, augment_batch, build_dataset
from major2minor.data.sampling import oversampled_indices


def test_digits_lt_splits_are_balanced_longtailed_and_deterministic():
    a = build_dataset(DataConfig(ratio=20, n_max=90))
    b = build_dataset(DataConfig(ratio=20, n_max=90))
    assert a.train_counts == [90, 64, 46, 33, 23, 17, 12, 8, 6, 4]
    assert torch.bincount(a.test.y).tolist() == [50] * 10
    assert torch.bincount(a.val.y).tolist() == [30] * 10
    assert torch.equal(a.train.x, b.train.x) and a.train.x.dtype == torch.uint8
    assert a.input_shape == (1, 8, 8) and a.bounds == (0.0, 1.0)
    # the test split is the first 50 images of each class in file order, and no class loses them to training
    from sklearn.datasets import load_digits

    from major2minor.data import hold_out_per_class

    raw = load_digits()
    held, _ = hold_out_per_class(raw.target, 50)
    assert a.test.y.tolist() == raw.target[held].tolist()
    assert torch.equal(a.test.x[:, 0].float(), torch.from_numpy((raw.images[held] * 255 / 16).round()).float())


def test_augment_is_seeded_and_keeps_shape_and_bounds():
    x = torch.rand(16, 3, 8, 8)
    spec = Augment(crop_padding=2, flip=True)
    a = augment_batch(x, spec, torch.Generator().manual_seed(0))
    b = augment_batch(x, spec, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == x.shape
    assert a.min() >= 0 and a.max() <= 1
    assert not torch.equal(a, x)


def test_crop_without_shift_and_flip_is_identity_and_flip_mirrors():
    x = torch.arange(2 * 1 * 3 * 3, dtype=torch.float32).reshape(2, 1, 3, 3)
    assert torch.equal(augment_batch(x, Augment(), torch.Generator()), x)
    g = torch.Generator().manual_seed(0)
    out = augment_batch(x, Augment(flip=True), g)
    for i in range(2):
        assert torch.equal(out[i], x[i]) or torch.equal(out[i], x[i].flip(2))


def test_oversampling_is_close_to_uniform_over_classes():
    labels = torch.tensor([0] * 900 + [1] * 90 + [2] * 10)
    idx = oversampled_indices(labels, [1 / 900, 1 / 90, 1 / 10], 30000, torch.Generator().manual_seed(0))
    share = torch.bincount(labels[idx], minlength=3).float() / 30000
    assert torch.allclose(share, torch.full((3,), 1 / 3), atol=0.02)
