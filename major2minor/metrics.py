"""Evaluation metrics, always on a whole split (never averaged over batches).

With per-class recall ``r_c = TP_c / n_c`` over the classes present in the split:

* bACC = mean_c r_c                     (scikit-learn's ``balanced_accuracy_score``)
* GM   = (prod_c r_c) ** (1 / C)        (imbalanced-learn's ``geometric_mean_score``); 0 when any
  class has zero recall, unless ``gm_correction`` > 0 replaces zero recalls by that value
* accuracy, macro-F1, and the mean recall of head/mid/tail thirds of the classes ranked by
  training count (the public code's major/neutral/minor) and of many (>100) / medium (20-100) /
  few (<20) training samples.

The metrics are NumPy's; torch is imported only where labels come as or become tensors, so ``import
major2minor.metrics`` does not load it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, List, Optional, Sequence

import numpy as np

if TYPE_CHECKING:
    import torch


def as_labels(y, what: str = "labels") -> torch.Tensor:
    """Class labels as the int64 tensor torch's losses and indexing need, from a tensor or array of any
    integer type (int32 from NumPy or pandas, uint8, ...); float or boolean labels are refused by name,
    since a float label may not be a whole class index at all."""
    import torch

    t = y if isinstance(y, torch.Tensor) else torch.as_tensor(np.asarray(y))
    if t.dtype == torch.int64:
        return t
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise ValueError(
            f"{what} must be integer class indices 0..C-1, got a {str(t.dtype).replace('torch.', '')} "
            f"{'tensor' if isinstance(y, torch.Tensor) else 'array'}; convert them with y.long() (NumPy: "
            "y.astype('int64')) once you have checked they are whole class indices."
        )
    return t.long()


def confusion(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    idx = y_true.astype(np.int64) * num_classes + y_pred.astype(np.int64)
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _mean(values: List[float]) -> Optional[float]:
    """Mean recall of a group of classes; None when the group is empty (JSON-friendly, unlike NaN)."""
    return float(np.mean(values)) if values else None


def _numpy(y) -> np.ndarray:
    """``y`` itself if it is a NumPy array, else (a tensor, a list) converted through torch."""
    if isinstance(y, np.ndarray):
        return y
    import torch

    return torch.as_tensor(y).cpu().numpy()


def classification_metrics(
    y_true, y_pred, num_classes: int, train_counts: Optional[Sequence[int]] = None, gm_correction: float = 0.0
) -> Dict[str, object]:
    """All metrics of design section 3 from true and predicted labels of a whole split."""
    y_true, y_pred = _numpy(y_true), _numpy(y_pred)
    cm = confusion(y_true, y_pred, num_classes)
    support = cm.sum(1)
    present = support > 0
    tp = np.diag(cm).astype(np.float64)
    recall = np.divide(tp, support, out=np.full(num_classes, np.nan), where=present)
    predicted = cm.sum(0)
    precision = np.divide(tp, predicted, out=np.zeros(num_classes), where=predicted > 0)
    r = recall[present]
    f1_den = precision + np.nan_to_num(recall)
    f1 = np.divide(2 * precision * np.nan_to_num(recall), f1_den, out=np.zeros(num_classes), where=f1_den > 0)
    r_gm = np.where(r > 0, r, gm_correction)
    gm = float(np.exp(np.mean(np.log(r_gm)))) if np.all(r_gm > 0) else 0.0
    out: Dict[str, object] = {
        "acc": float(tp.sum() / max(len(y_true), 1)),
        "bacc": float(r.mean()) if len(r) else float("nan"),
        "gm": gm,
        "macro_f1": float(f1[present].mean()) if present.any() else float("nan"),
        "per_class_recall": [None if np.isnan(v) else float(v) for v in recall],
    }
    if train_counts is not None:
        counts = np.asarray(train_counts)
        order = np.argsort(-counts, kind="stable")  # head first
        third = num_classes // 3
        groups = {
            "head": order[:third],
            "tail": order[num_classes - third :] if third else order[:0],
            "mid": order[third : num_classes - third],
        }
        for name, cls in groups.items():
            out[f"{name}_recall"] = _mean([recall[c] for c in cls if present[c]])
        shots = {"many": counts > 100, "medium": (counts >= 20) & (counts <= 100), "few": counts < 20}
        for name, mask in shots.items():
            out[f"{name}_recall"] = _mean([recall[c] for c in np.flatnonzero(mask) if present[c]])
    return out
