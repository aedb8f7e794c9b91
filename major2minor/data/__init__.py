"""Data: class-count profiles, splits, in-memory tensors, samplers and the data sets."""

from major2minor.data.core import Augment, DataBundle, Split, augment_batch, to_float
from major2minor.data.profiles import class_counts, hold_out_per_class, select_per_class
from major2minor.registry import DATASETS


def build_dataset(cfg, seed: int = 0) -> DataBundle:
    """Build the data set named by ``cfg.name`` (a :class:`~major2minor.config.DataConfig`)."""
    return DATASETS.get(cfg.name)(cfg, seed)


__all__ = [
    "Augment",
    "DataBundle",
    "Split",
    "augment_batch",
    "to_float",
    "class_counts",
    "hold_out_per_class",
    "select_per_class",
    "build_dataset",
]
