import numpy as np
import pytest

from major2minor.data import profiles
from major2minor.data.profiles import class_counts, hold_out_per_class, select_per_class


def test_cifar10_longtail_golden_counts():
    counts = class_counts("longtail", 5000, 10, 100)
    assert counts == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert sum(counts) == 12406


def test_cifar100_longtail_golden_counts():
    # 500 * 100 ** (-99/99) is exactly 5: floating point gives 4.99...97 or 5.00...25 depending on the CPU's math
    # library, so int() of it gave 4 or 5 (10,846 or 10,847 images) by processor; the exact count is 5 / 10,847
    counts = class_counts("longtail", 500, 100, 100)
    assert counts[0] == 500 and counts[-1] == 5
    assert sum(counts) == 10847


def test_counts_do_not_depend_on_floating_point_rounding(monkeypatch):
    """The counts come from exact arithmetic: a floating-point first guess that is off either way (as a math
    library's last digits can be) is corrected, so the counts stay the same."""
    for nudge in (1 - 1e-9, 1 + 1e-9):
        monkeypatch.setattr(profiles, "float", lambda v, nudge=nudge: float(v) * nudge, raising=False)
        counts = class_counts("longtail", 500, 100, 100)
        assert counts[-1] == 5 and sum(counts) == 10847
        assert class_counts("longtail", 5000, 10, 100)[-1] == 50
        monkeypatch.undo()


@pytest.mark.parametrize(
    "n_max, num_classes, ratio", [(500, 100, 100), (5000, 10, 100), (5000, 10, 10), (1280, 1000, 256), (7, 3, 2.5)]
)
def test_longtail_counts_match_high_precision_floor(n_max, num_classes, ratio):
    """Each count is floor(n_max * ratio ** (-i / (C - 1))), checked against 80-digit decimal arithmetic."""
    from decimal import Decimal, getcontext

    getcontext().prec = 80
    counts = class_counts("longtail", n_max, num_classes, ratio)
    for i, n in enumerate(counts):
        exact = Decimal(n_max) * Decimal(ratio) ** (Decimal(-i) / Decimal(num_classes - 1))
        # exact integers (i = 0, C-1 here) come out of the 80-digit power as k.000... or (k-1).999...9
        floor = int(exact + Decimal("1e-60"))
        assert n == floor, (i, n, exact)


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
