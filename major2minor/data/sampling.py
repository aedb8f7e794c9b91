"""Index streams for one epoch: plain shuffling and class-aware over-sampling.

Over-sampling (ROS, DRS, M2m from T0 on) draws ``num_samples`` indices with replacement, each
sample with probability proportional to its class weight (1 / N_y for the paper's re-sampling), as
the public code's ``WeightedRandomSampler(1/N_y, N)`` does.
"""

from __future__ import annotations

from typing import Iterator, Optional, Sequence

import torch


def shuffled_indices(n: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randperm(n, generator=generator)


def oversampled_indices(
    labels: torch.Tensor, class_weights: Sequence[float] | torch.Tensor, num_samples: int, generator: torch.Generator
) -> torch.Tensor:
    """Draw ``num_samples`` indices with replacement, P(i) proportional to ``class_weights[y_i]``."""
    w = torch.as_tensor(class_weights, dtype=torch.float64)[labels.cpu().long()]
    return torch.multinomial(w, num_samples, replacement=True, generator=generator)


def epoch_indices(
    labels: torch.Tensor,
    sample_class_weights: Optional[Sequence[float]],
    generator: torch.Generator,
    num_samples: Optional[int] = None,
) -> torch.Tensor:
    """Uniform shuffle when ``sample_class_weights`` is None, else weighted over-sampling."""
    n = len(labels) if num_samples is None else num_samples
    if sample_class_weights is None:
        return shuffled_indices(len(labels), generator)
    return oversampled_indices(labels, sample_class_weights, n, generator)


def batch_slices(indices: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    for start in range(0, len(indices), batch_size):
        yield indices[start : start + batch_size]
