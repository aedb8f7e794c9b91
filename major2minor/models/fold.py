"""Folding BatchNorm into the preceding convolution for a frozen network in eval mode.

In eval mode ``bn(conv(x)) = conv'(x)`` with ``W' = W * s``, ``b' = beta + (b - mu) * s`` and
``s = gamma / sqrt(var + eps)``, so the frozen generator g of M2m can run one kernel instead of
two per layer during translation.  The result is the same function up to floating-point rounding
(of the same order as switching the memory layout, measured in benchmarks/README.md).
"""

from __future__ import annotations

import copy
import warnings

import torch
import torch.nn as nn


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with every conv->bn pair folded (torch.fx), sharing nothing
    (a model without BatchNorm is returned as it is, in eval mode).

    Models that torch.fx cannot trace are returned unfolded (as an eval copy) with a warning, so
    the caller still gets a correct network.
    """
    from torch.fx.experimental.optimization import fuse

    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return model.eval()  # nothing to fold
    frozen = copy.deepcopy(model).eval()
    try:
        folded = fuse(frozen)
    except Exception as exc:  # a user model with data-dependent control flow
        warnings.warn(
            f"could not fold BatchNorm of {type(model).__name__} ({type(exc).__name__}: {exc}); "
            "using it unfolded (slower, same results).",
            stacklevel=2,
        )
        return frozen
    folded.requires_grad_(False)
    return folded.eval()


def conv_bn_pairs(model: nn.Module):
    """Qualified names ``(conv, bn)`` of the conv->BatchNorm pairs that ``fold_batchnorm`` folds.

    The same rule as ``torch.fx.experimental.optimization.fuse``: a BatchNorm module whose only input
    is the output of a convolution module of the same dimension that nothing else reads.
    """
    import torch.fx as fx

    patterns = {nn.Conv1d: nn.BatchNorm1d, nn.Conv2d: nn.BatchNorm2d, nn.Conv3d: nn.BatchNorm3d}
    modules = dict(model.named_modules())
    pairs = []
    for node in fx.symbolic_trace(model).graph.nodes:
        if node.op != "call_module" or not node.args or not isinstance(node.args[0], fx.Node):
            continue
        prev = node.args[0]
        if prev.op != "call_module" or len(prev.users) > 1:
            continue
        conv, bn = modules.get(prev.target), modules.get(node.target)
        if type(conv) in patterns and type(bn) is patterns[type(conv)]:
            pairs.append((prev.target, node.target))
    return pairs


def _tensors(net: nn.Module):
    """Every parameter and buffer by qualified name (non-persistent buffers too)."""
    return {**dict(net.named_parameters()), **dict(net.named_buffers())}


class FoldedMirror:
    """A BatchNorm-folded, eval-mode copy of a network that is still being trained, refreshed on demand.

    M2m runs the classifier f in eval mode for T gradient steps per batch, where each BatchNorm is
    an affine map; folding it into the preceding convolution (``W' = W * s``,
    ``b' = beta + (b - mu) * s``, ``s = gamma / sqrt(var + eps)``) gives the same function with one
    kernel instead of two per layer, forward and backward.  f changes every training step, so the
    structure is traced and folded once and :meth:`refresh` recomputes the folded weights (and copies
    every other parameter and buffer) from f's current state before each translated batch.
    """

    def __init__(self, source: nn.Module):
        self.source = source
        self.pairs = conv_bn_pairs(source)
        self.net = fold_batchnorm(source)
        src_names = set(_tensors(source))
        folded_bn = {bn for _, bn in self.pairs}
        expected = {k for k in src_names if k.rsplit(".", 1)[0] not in folded_bn}
        expected |= {f"{conv}.bias" for conv, _ in self.pairs}
        got = set(_tensors(self.net))
        if got != expected:  # fx folded something else than we would refresh: refuse rather than drift
            raise RuntimeError(
                f"cannot mirror {type(source).__name__} with BatchNorm folded: folded "
                f"state has {sorted(got ^ expected)[:5]} unlike the source; set "
                "m2m.fold_classifier=false."
            )

    @torch.no_grad()
    def refresh(self) -> nn.Module:
        """Copy f's current weights into the mirror (folding each conv/BN pair); returns the mirror."""
        from torch.nn.utils.fusion import fuse_conv_bn_weights

        src, dst = _tensors(self.source), _tensors(self.net)
        folded = set()
        for conv, bn in self.pairs:
            eps = self.source.get_submodule(bn).eps
            w, b = fuse_conv_bn_weights(
                src[f"{conv}.weight"],
                src.get(f"{conv}.bias"),
                src[f"{bn}.running_mean"],
                src[f"{bn}.running_var"],
                eps,
                src[f"{bn}.weight"],
                src[f"{bn}.bias"],
            )
            dst[f"{conv}.weight"].copy_(w)
            dst[f"{conv}.bias"].copy_(b)
            folded.update((f"{conv}.weight", f"{conv}.bias"))
        for name, tensor in dst.items():
            if name not in folded:
                tensor.copy_(src[name])
        return self.net
