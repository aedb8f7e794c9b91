"""In-memory data: the ``DataBundle`` every data set returns, and batched augmentation.

Images are kept as uint8 tensors (N, C, H, W) and turned into floats in [0, 1] per batch on the
compute device; feature data are float32 (N, D).  Inputs stay in the data's natural space:
normalisation (mean/std) happens inside the model, so M2m's translation and its clamp to the input
bounds work on pixels in [0, 1].
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from major2minor.data.profiles import counts_of
from major2minor.metrics import as_labels


@dataclass
class Split:
    x: torch.Tensor  # uint8 (N, C, H, W) images or float32 (N, D) features
    y: torch.Tensor  # int64 (N,); labels of any integer type are converted, float ones refused

    def __post_init__(self) -> None:
        self.y = as_labels(self.y, "split labels y")
        if len(self.x) != len(self.y):
            raise ValueError(f"split has {len(self.x)} inputs but {len(self.y)} labels")

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device: torch.device | str) -> Split:
        return Split(self.x.to(device), self.y.to(device))


@dataclass
class Augment:
    crop_padding: int = 0  # random crop of the original size after zero-padding by this much
    flip: bool = False  # random horizontal flip

    @property
    def active(self) -> bool:
        return self.crop_padding > 0 or self.flip


@dataclass
class DataBundle:
    """Train/val/test splits plus everything the engine and M2m need to know about the data."""

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    class_names: List[str]
    bounds: Optional[Tuple[float, float]]  # input bounds for M2m's clamp; None = unbounded
    mean: Optional[Tuple[float, ...]] = None  # per-channel normalisation inside the model
    std: Optional[Tuple[float, ...]] = None
    augment: Augment = field(default_factory=Augment)
    info: Dict[str, Any] = field(default_factory=dict)  # data-set specific facts for the manifest

    def __post_init__(self) -> None:
        for split_name in ("train", "val", "test"):
            split = getattr(self, split_name)
            if len(split) and (int(split.y.min()) < 0 or int(split.y.max()) >= self.num_classes):
                bad = int(split.y.max()) if int(split.y.max()) >= self.num_classes else int(split.y.min())
                raise ValueError(
                    f"{self.name}: {split_name} label {bad} is outside [0, {self.num_classes}); "
                    "check the label column / class list of the data files."
                )
        empty = [c for c, n in enumerate(self.train_counts) if n == 0]
        if empty:
            names = [self.class_names[c] for c in empty[:5]]
            raise ValueError(
                f"{self.name}: classes {empty[:5]} ({names}) have no training samples; "
                "every class needs at least one (drop the class or lower data.ratio)."
            )

    @property
    def train_counts(self) -> List[int]:
        return counts_of(self.train.y, self.num_classes)

    @property
    def input_shape(self) -> Tuple[int, ...]:
        return tuple(self.train.x.shape[1:])

    @property
    def is_image(self) -> bool:
        return self.train.x.dim() == 4

    def manifest(self) -> Dict[str, Any]:
        """Split sizes, per-class counts and a checksum of the exact indices/labels used."""
        digest = hashlib.sha256()
        for split in (self.train, self.val, self.test):
            digest.update(split.y.cpu().numpy().astype(np.int64).tobytes())
            if hasattr(split.x, "fingerprint"):  # streamed images: their file list, nothing decoded
                digest.update(split.x.fingerprint())
            else:
                digest.update(np.ascontiguousarray(split.x[: min(len(split), 64)].cpu().numpy()).tobytes())
        counts = self.train_counts
        return {
            "name": self.name,
            "num_classes": self.num_classes,
            "class_names": self.class_names,
            "input_shape": list(self.input_shape),
            "bounds": list(self.bounds) if self.bounds else None,
            "sizes": {"train": len(self.train), "val": len(self.val), "test": len(self.test)},
            "train_counts": counts,
            "val_counts": counts_of(self.val.y, self.num_classes),
            "test_counts": counts_of(self.test.y, self.num_classes),
            "imbalance_ratio": max(counts) / max(min(counts), 1),
            "checksum": digest.hexdigest(),
            **self.info,
        }


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float in [0, 1]; float features unchanged."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


def augment_batch(x: torch.Tensor, spec: Augment, generator: torch.Generator) -> torch.Tensor:
    """Random crop with zero padding and horizontal flip for a whole batch at once.

    ``x`` is a float (B, C, H, W) batch; randomness comes only from ``generator`` (on x's device),
    so the same generator state gives the same batch.
    """
    if not spec.active or x.dim() != 4:
        return x
    b, _, h, w = x.shape
    device = x.device
    if spec.crop_padding > 0:
        p = spec.crop_padding
        padded = torch.nn.functional.pad(x, (p, p, p, p))
        dy = torch.randint(0, 2 * p + 1, (b,), generator=generator, device=device)
        dx = torch.randint(0, 2 * p + 1, (b,), generator=generator, device=device)
        rows = dy[:, None] + torch.arange(h, device=device)[None, :]  # (B, H)
        cols = dx[:, None] + torch.arange(w, device=device)[None, :]  # (B, W)
        batch_idx = torch.arange(b, device=device)[:, None, None]
        # gather (B, C, H, W) via advanced indexing: index [b, :, rows, cols]
        x = padded.permute(0, 2, 3, 1)[batch_idx, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    if spec.flip:
        flip = torch.rand(b, generator=generator, device=device) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    return x.contiguous()
