"""A/B timing of ideas for a faster fp32 translation on CPUs without BF16 (not a test, nothing kept here).

    python benchmarks/fp32_ideas.py [--slots 80] [--repeats 5] [--threads 0]

Each idea is a variant of ``M2mTranslator.translate`` run on the same fixed batch of CIFAR-shaped slots
(ResNet-32 f and g, T = 10, lam 0.5, fp32), alternated within every repeat so that machine noise hits
them alike.  Prints one JSON object: the median seconds per variant, its ratio to the baseline, and the
largest difference of its translated inputs from the baseline's.

* ``baseline``: the library's translation (BatchNorm folded in f and g).
* ``in-place step``: the normalised step and the clamp done in place on x (``addcdiv_``, ``clamp_``)
  instead of allocating new tensors each step ("fewer host-side allocations in the T-step loop").
* ``self: two passes`` / ``self: one shared pass``: M2m-Self, where f plays g: the library runs f twice
  per step (once for CE(g(x), k), once for lam * f_k0(x)); the variant computes f's logits once and
  builds both terms from them (the same function; the gradient differs only by rounding).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F
from translation_probe import probe_inputs  # same directory: the shared fixed probe

from major2minor.methods.m2m import M2mConfig, M2mTranslator

COUNTS = [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]


def in_place_translate(t: M2mTranslator, f, x0, target, seed_class, noise):
    """The library's translate with the step and the clamp applied in place."""
    x = t._clamp(x0 + noise).detach().contiguous(memory_format=torch.channels_last)
    lo, hi = t.bounds
    for _ in range(t.cfg.steps):
        x.requires_grad_(True)
        loss = F.nll_loss(t.g_log_probs(f, x), target, reduction="sum")
        loss = loss + t.cfg.lam * f(x).gather(1, seed_class[:, None]).sum()
        (grad,) = torch.autograd.grad(loss, [x])
        norm = grad.flatten(1).norm(dim=1).view(-1, 1, 1, 1).add_(1e-10)
        x = x.detach()
        x.addcdiv_(grad, norm, value=-t.cfg.step_size).clamp_(lo, hi)
    return x


def shared_self_translate(t: M2mTranslator, f, x0, target, seed_class, noise):
    """M2m-Self with one forward of f per step for both terms of the loss."""
    x = t._clamp(x0 + noise).detach().contiguous(memory_format=torch.channels_last)
    for _ in range(t.cfg.steps):
        x.requires_grad_(True)
        z = f(x).float()
        loss = (
            F.nll_loss(F.log_softmax(z, 1), target, reduction="sum")
            + t.cfg.lam * z.gather(1, seed_class[:, None]).sum()
        )
        (grad,) = torch.autograd.grad(loss, [x])
        norm = grad.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        x = t._clamp(x.detach() - t.cfg.step_size * grad / (norm + 1e-10))
    return x.detach()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--slots", type=int, default=80)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args()
    flushed, f, g, x0, target, seed_class, noise = probe_inputs(args.slots, args.threads)
    with_g = M2mTranslator(g, COUNTS, M2mConfig(), (0.0, 1.0), channels_last=True)
    self_mode = M2mTranslator(None, COUNTS, M2mConfig(), (0.0, 1.0), channels_last=True)
    variants = {
        "baseline": lambda: with_g.translate(with_g.eval_classifier(f), x0, target, seed_class, noise),
        "in-place step": lambda: in_place_translate(with_g, with_g.eval_classifier(f), x0, target, seed_class, noise),
        "self: two passes": lambda: self_mode.translate(self_mode.eval_classifier(f), x0, target, seed_class, noise),
        "self: one shared pass": lambda: shared_self_translate(
            self_mode, self_mode.eval_classifier(f), x0, target, seed_class, noise
        ),
    }
    times = {name: [] for name in variants}
    outputs = {}
    for r in range(args.repeats + 1):  # the first round is warm-up
        for name, run in variants.items():
            start = time.perf_counter()
            outputs[name] = run()
            if r:
                times[name].append(time.perf_counter() - start)
    med = {n: statistics.median(v) for n, v in times.items()}
    reference = {"baseline": "baseline", "in-place step": "baseline", "self: two passes": "self: two passes",
                 "self: one shared pass": "self: two passes"}  # fmt: skip
    print(json.dumps({
        "slots": args.slots, "steps": 10, "dtype": "fp32", "threads": torch.get_num_threads(),
        "torch": torch.__version__, "flush_denormal_all_threads": flushed,
        "seconds": {n: round(v, 3) for n, v in med.items()},
        "ratio_to_reference": {n: round(med[n] / med[reference[n]], 3) for n in med},
        "max_abs_diff_from_reference": {n: float((outputs[n] - outputs[reference[n]]).abs().max()) for n in med},
        "all_seconds": {n: [round(s, 3) for s in v] for n, v in times.items()},
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
