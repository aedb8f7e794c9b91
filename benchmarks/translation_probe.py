"""A/B timing of M2m's translation alone, with a fixed number of slots (not a test).

    python benchmarks/translation_probe.py [--slots 80] [--repeats 5] [--threads 0]

``m2m bench`` times whole M2m batches, whose number of translated slots varies from batch to batch;
on a shared machine that hides differences of 10-20%.  This probe translates the same batch of
``--slots`` CIFAR-shaped slots (ResNet-32 f and g, T = 10, lam 0.5) with each variant in turn,
alternating the variants within every repeat so that machine noise hits them alike, and prints one
JSON object: the median seconds per variant, and the largest difference of each variant's
translated inputs from the default's (they compute the same function up to rounding).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from major2minor.config import Config
from major2minor.methods.m2m import M2mConfig, M2mTranslator
from major2minor.models import build_model
from major2minor.numerics import flush_denormals

VARIANTS = {
    "default (fold f and g)": dict(),
    "fold_classifier=false": dict(fold_classifier=False),
    "fold_generator=false": dict(fold_generator=False),
    "neither folded": dict(fold_classifier=False, fold_generator=False),
}


def probe_inputs(slots: int, threads: int):
    """The fixed probe both A/B scripts translate: flush-to-zero on, ResNet-32 f (with non-identity BatchNorm
    statistics, eval mode) and g, and ``slots`` random inputs, targets, seed classes and zero noise."""
    flushed = flush_denormals(True)
    if threads:
        torch.set_num_threads(threads)
    cfg = Config()
    cfg.model.name = "resnet32"

    def make(seed):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = build_model(cfg, 10, (3, 32, 32), (0.5,) * 3, (0.25,) * 3)
        return net.to(memory_format=torch.channels_last)

    f, g = make(0), make(1)
    with torch.no_grad():  # BatchNorm statistics that are not the identity
        f.train()
        for _ in range(3):
            f(torch.rand(64, 3, 32, 32))
    f.eval()
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand(slots, 3, 32, 32, generator=gen)
    target = torch.randint(0, 10, (slots,), generator=gen)
    seed_class = torch.randint(0, 10, (slots,), generator=gen)
    noise = torch.zeros_like(x0)
    return flushed, f, g, x0, target, seed_class, noise


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--slots", type=int, default=80)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args()
    flushed, f, g, x0, target, seed_class, noise = probe_inputs(args.slots, args.threads)
    translators = {
        name: M2mTranslator(
            g, [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50], M2mConfig(**kw), (0.0, 1.0), channels_last=True
        )
        for name, kw in VARIANTS.items()
    }
    times = {name: [] for name in VARIANTS}
    outputs = {}
    for r in range(args.repeats + 1):  # the first round is warm-up
        for name, t in translators.items():
            start = time.perf_counter()
            outputs[name] = t.translate(t.eval_classifier(f), x0, target, seed_class, noise)
            if r:
                times[name].append(time.perf_counter() - start)
    ref = outputs["default (fold f and g)"]
    print(
        json.dumps(
            {
                "slots": args.slots,
                "steps": 10,
                "threads": torch.get_num_threads(),
                "torch": torch.__version__,
                "flush_denormal_all_threads": flushed,
                "seconds": {n: round(statistics.median(v), 3) for n, v in times.items()},
                "all_seconds": {n: [round(s, 3) for s in v] for n, v in times.items()},
                "max_abs_diff_from_default": {n: float((o - ref).abs().max()) for n, o in outputs.items()},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
