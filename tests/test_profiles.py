import numpy as np
import pytest

from major2minor.data.profiles import class_counts, hold_out_per_class, select_per_class


def test_cifar10_longtail_golden_counts():
    counts = class_counts("longtail", 5000, 10, 100)
    assert counts == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert sum(counts) == 12406


def test_cifar100_longtail_golden_counts():
    counts = class_counts("longtail", 500, 100, 100)
    assert counts[0] == 500 and counts[-1] == 4
    assert sum(counts) == 10846


def test_step_profile():
    assert class_counts("step", 5000, 10, 100) == [5000] * 5 + [50] * 5
    assert class_counts("step", 100, 4, 10, minor_fraction=0.25) == [100, 100, 100, 10]


def test_ratio_below_one_is_refused():
    with pytest.raises(ValueError, match="data.ratio=0.5"):
        class_counts("longtail", 100, 10, 0.5)


def test_ratio_that_empties_a_class_is_refused():
    with pytest.raises(ValueError, match="lower data.ratio"):
        class_counts("longtail", 10, 10, 100)


def test_select_first_in_file_order_and_random_is_seeded():
    labels = np.array([0, 1, 0, 1, 0, 1, 0])
    assert select_per_class(labels, [2, 1]).tolist() == [0, 1, 2]
    a = select_per_class(labels, [2, 1], "random", seed=3)
    b = select_per_class(labels, [2, 1], "random", seed=3)
    assert a.tolist() == b.tolist()
    assert np.bincount(labels[a]).tolist() == [2, 1]


def test_hold_out_first_per_class():
    labels = np.array([0, 0, 1, 0, 1, 1])
    held, rest = hold_out_per_class(labels, 1)
    assert held.tolist() == [0, 2] and rest.tolist() == [1, 3, 4, 5]
