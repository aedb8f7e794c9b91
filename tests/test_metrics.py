import numpy as np
import pytest
from imblearn.metrics import geometric_mean_score
from sklearn.metrics import balanced_accuracy_score, f1_score

from major2minor.metrics import classification_metrics


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bacc_gm_f1_match_reference_libraries(seed):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 5, 300)
    y_pred = np.where(rng.random(300) < 0.7, y_true, rng.integers(0, 5, 300))
    m = classification_metrics(y_true, y_pred, 5, train_counts=[500, 200, 80, 30, 5])
    assert m["bacc"] == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    assert m["gm"] == pytest.approx(geometric_mean_score(y_true, y_pred))
    assert m["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert m["acc"] == pytest.approx(np.mean(y_true == y_pred))


def test_zero_recall_class_gives_gm_zero_like_imblearn():
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 0, 1, 0, 0, 1])  # class 2 never right
    m = classification_metrics(y_true, y_pred, 3)
    assert m["gm"] == 0.0 == geometric_mean_score(y_true, y_pred)
    assert m["bacc"] == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    assert m["per_class_recall"] == [1.0, 0.5, 0.0]


def test_head_mid_tail_by_training_count_not_index():
    y_true = np.array([0, 1, 2])
    y_pred = np.array([0, 0, 2])  # class 1 wrong
    m = classification_metrics(y_true, y_pred, 3, train_counts=[10, 1000, 50])
    assert m["head_recall"] == 0.0  # class 1 is the head
    assert m["mid_recall"] == 1.0 and m["tail_recall"] == 1.0
    assert m["many_recall"] == 0.0 and m["medium_recall"] == 1.0 and m["few_recall"] == 1.0
