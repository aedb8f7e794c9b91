"""The memory a model needs to train, estimated before it is built, so that an impossible size is refused
naming the setting (``model.width``, ``model.hidden``, ``train.batch_size``, ``data.image_size``) instead of
failing inside torch's allocator.

The model is built on torch's ``meta`` device (shapes only, no storage; milliseconds, its initialisers
skipped): its weights count
three times (weights, gradients, SGD momentum).  Activations (the output of every leaf module, kept for the
backward pass) are first bounded from above cheaply (leaves x batch x widest layer x input pixels); only
when that bound does not fit is one batch run through the meta model for the exact figure, because torch's
first meta convolution and batch norm cost seconds of one-time set-up that an ordinary run should not pay.
Buffers, workspace and a frozen g are left out, so the estimate is low (see :mod:`major2minor.memory`).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch.overrides import TorchFunctionMode

from major2minor.memory import machine_memory, require, size_text
from major2minor.models import build_model

_WIDTHS = ("in_channels", "out_channels", "in_features", "out_features", "num_features")


class _SkipInPlace(TorchFunctionMode):
    """In-place operations on meta tensors (the initialisers: ``normal_``, ``uniform_``, ``fill_``, ...) do
    nothing: they keep the shape, and torch runs them on the meta device through its Python reference
    implementations, whose first use imports for seconds."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name.endswith("_") and not name.endswith("__") and args and torch.is_tensor(args[0]) and args[0].is_meta:
            return args[0]
        return func(*args, **(kwargs or {}))


def meta_model(cfg, num_classes: int, input_shape: Sequence[int]) -> torch.nn.Module:
    """The model with shapes and no storage (milliseconds); the caller's random streams untouched."""
    with torch.random.fork_rng(devices=[]), torch.device("meta"), _SkipInPlace():
        return build_model(cfg, num_classes, tuple(input_shape))


def weight_bytes(model: torch.nn.Module) -> int:
    """Weights, their gradients and SGD's momentum buffer."""
    return 3 * sum(p.numel() * p.element_size() for p in model.parameters())


def _leaves(model: torch.nn.Module):
    return [m for m in model.modules() if not list(m.children())]


def activation_bound(model: torch.nn.Module, input_shape: Sequence[int], batch: int) -> int:
    """An upper bound on the float32 leaf outputs of one batch: these models never grow an image, so no output
    is larger than the widest layer (or the input) at the input's height and width."""
    widths = [w for m in model.modules() for a in _WIDTHS if isinstance(w := getattr(m, a, None), int)]
    spatial = math.prod(input_shape[1:]) if len(input_shape) == 3 else 1
    widest = max([*widths, math.prod(input_shape)])
    return len(_leaves(model)) * batch * widest * spatial * 4


def activation_bytes(model: torch.nn.Module, input_shape: Sequence[int], batch: int) -> int:
    """The leaf outputs of one batch, from a forward pass on the meta device (0 where it cannot run there)."""
    outputs = []

    def record(module, inputs, output) -> None:
        if torch.is_tensor(output):
            outputs.append(output.numel() * output.element_size())

    handles = [m.register_forward_hook(record) for m in _leaves(model)]
    try:
        model(torch.empty((batch, *input_shape), device="meta"))
    except Exception:  # noqa: BLE001 - a model the meta device cannot run: its weights alone are estimated
        outputs.clear()
    finally:
        for h in handles:
            h.remove()
    return sum(outputs)


def check_training_memory(
    cfg, num_classes: int, input_shape: Sequence[int], device: torch.device, train_size: Optional[int] = None
) -> None:
    """Refuse, naming the setting that drives it, a model whose training cannot fit in ``device``'s memory.
    ``train_size``: the training split's size (a batch is never larger)."""
    have = machine_memory(device)
    if have is None:
        return
    batch, m = min(cfg.train.batch_size, train_size or cfg.train.batch_size), cfg.model
    model = meta_model(cfg, num_classes, input_shape)
    size = {"cnn": f"model.width (now {m.width})", "mlp": f"model.hidden (now {list(m.hidden)})"}
    weights = weight_bytes(model)
    model_fix = f"lower {size.get(m.name, f'the model size (model.name={m.name})')}"
    what = f"training model {m.name} (its weights, gradients and momentum alone)"
    require(weights, what, model_fix, device)
    if weights + activation_bound(model, input_shape, batch) <= have[0]:
        return  # fits even at the bound: no exact (slower) estimate needed
    activations = activation_bytes(model, input_shape, batch)
    if weights >= activations:
        fix = model_fix
    else:
        image = f", data.image_size (now {cfg.data.image_size})" if cfg.data.image_size else ""
        width = f", {size['cnn']}" if m.name == "cnn" else ""
        fix = f"lower train.batch_size (now {cfg.train.batch_size}){image}{width}"
    shape = "x".join(str(s) for s in input_shape)
    what = (
        f"training model {m.name} ({size_text(weights)} for its weights, gradients and momentum, "
        f"{size_text(activations)} for the activations of a batch of {batch} inputs of {shape})"
    )
    require(weights + activations, what, fix, device)


__all__ = ["activation_bound", "activation_bytes", "check_training_memory", "meta_model", "weight_bytes"]
