"""The memory a model needs to train, estimated before it is built, so that an impossible size is refused
naming the setting (``model.width``, ``model.hidden``, ``train.batch_size``, ``data.image_size``) instead of
failing inside torch's allocator.

The model is built on torch's ``meta`` device (shapes only, no storage) and one batch is run through it
there: the weights count three times (weights, gradients, SGD momentum), and the output of every leaf
module once (kept for the backward pass).  Buffers, workspace and a frozen g are left out, so the estimate
is low (see :mod:`major2minor.memory`).
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch

from major2minor.memory import require, size_text
from major2minor.models import build_model


def training_bytes(cfg, num_classes: int, input_shape: Sequence[int], batch_size: int) -> Tuple[int, int]:
    """``(weights, activations)`` in bytes: 3 x the float32 parameters, and the leaf outputs of one batch."""
    with torch.random.fork_rng(devices=[]), torch.device("meta"):  # no storage; the caller's RNG untouched
        model = build_model(cfg, num_classes, tuple(input_shape))
    weights = 3 * sum(p.numel() * p.element_size() for p in model.parameters())
    outputs = []

    def record(module, inputs, output) -> None:
        if torch.is_tensor(output):
            outputs.append(output.numel() * output.element_size())

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(record) for m in leaves]
    try:
        model(torch.empty((batch_size, *input_shape), device="meta"))
    except Exception:  # noqa: BLE001 - a model the meta device cannot run: its weights alone are estimated
        outputs.clear()
    finally:
        for h in handles:
            h.remove()
    return weights, sum(outputs)


def check_training_memory(
    cfg, num_classes: int, input_shape: Sequence[int], device: torch.device, train_size: Optional[int] = None
) -> None:
    """Refuse, naming the setting that drives it, a model whose training cannot fit in ``device``'s memory.
    ``train_size``: the training split's size (a batch is never larger)."""
    batch = min(cfg.train.batch_size, train_size or cfg.train.batch_size)
    weights, activations = training_bytes(cfg, num_classes, input_shape, batch)
    m = cfg.model
    size = {"cnn": f"model.width (now {m.width})", "mlp": f"model.hidden (now {list(m.hidden)})"}
    if weights >= activations:
        fix = f"lower {size.get(m.name, f'the model size (model.name={m.name})')}"
    else:
        image = f", data.image_size (now {cfg.data.image_size})" if cfg.data.image_size else ""
        width = f", {size['cnn']}" if m.name == "cnn" else ""
        fix = f"lower train.batch_size (now {cfg.train.batch_size}){image}{width}"
    shape = "x".join(str(s) for s in input_shape)
    require(
        weights + activations,
        f"training model {m.name} ({size_text(weights)} for its weights, gradients and momentum, "
        f"{size_text(activations)} for the activations of a batch of {batch} inputs of {shape})",
        fix,
        device,
    )


__all__ = ["check_training_memory", "training_bytes"]
