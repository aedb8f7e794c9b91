"""Folding BatchNorm into the preceding convolution for a frozen network in eval mode.

In eval mode ``bn(conv(x)) = conv'(x)`` with ``W' = W * s``, ``b' = beta + (b - mu) * s`` and
``s = gamma / sqrt(var + eps)``, so the frozen generator g of M2m can run one kernel instead of
two per layer during translation.  The result is the same function up to floating-point rounding
(of the same order as switching the memory layout, measured in benchmarks/README.md).
"""
from __future__ import annotations

import copy
import warnings

import torch.nn as nn


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with every conv->bn pair folded (torch.fx), sharing nothing
    (a model without BatchNorm is returned as it is, in eval mode).

    Models that torch.fx cannot trace are returned unfolded (as an eval copy) with a warning, so
    the caller still gets a correct network.
    """
    from torch.fx.experimental.optimization import fuse

    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return model.eval()      # nothing to fold
    frozen = copy.deepcopy(model).eval()
    try:
        folded = fuse(frozen)
    except Exception as exc:  # a user model with data-dependent control flow
        warnings.warn(f"could not fold BatchNorm of {type(model).__name__} ({type(exc).__name__}: {exc}); "
                      "using it unfolded (slower, same results).", stacklevel=2)
        return frozen
    folded.requires_grad_(False)
    return folded.eval()
