"""Upper bound on what faster BatchNorm kernels could save in the plain training step (not a test).

    python benchmarks/step_without_batchnorm.py [--rounds 8]

Times the DRS-style training step (ResNet-32, batch 128, channels-last, augment, SGD) of the real
network and of the same network with every BatchNorm replaced by the identity, interleaved round by
round so machine noise hits both alike, and prints JSON.  The second is not a usable model: it
bounds from below the step time that any BatchNorm optimisation (fused kernels included) could
reach, because the convolutions and the rest stay as they are.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from major2minor.config import Config
from major2minor.data import Augment, augment_batch, to_float
from major2minor.models import build_model
from major2minor.numerics import flushing_denormals


def network(without_batchnorm: bool) -> nn.Module:
    cfg = Config()
    cfg.model.name = "resnet32"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = build_model(cfg, 10, (3, 32, 32), (0.5,) * 3, (0.25,) * 3)
    if without_batchnorm:
        for module in list(net.modules()):
            for name, child in list(module.named_children()):
                if isinstance(child, nn.BatchNorm2d):
                    setattr(module, name, nn.Identity())
    return net.to(memory_format=torch.channels_last)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=8)
    args = p.parse_args()
    with flushing_denormals(True):
        gen = torch.Generator().manual_seed(0)
        x_u8 = torch.randint(0, 256, (128, 3, 32, 32), dtype=torch.uint8, generator=gen)
        y = torch.randint(0, 10, (128,), generator=gen)
        aug, aug_gen = Augment(crop_padding=4, flip=True), torch.Generator().manual_seed(1)
        nets = {"resnet32": network(False), "resnet32 without BatchNorm": network(True)}
        opts = {k: torch.optim.SGD(n.parameters(), lr=0.01, momentum=0.9, weight_decay=2e-4) for k, n in nets.items()}

        def step(name: str) -> None:
            x = augment_batch(to_float(x_u8), aug, aug_gen).contiguous(memory_format=torch.channels_last)
            loss = F.cross_entropy(nets[name](x), y)
            opts[name].zero_grad(set_to_none=True)
            loss.backward()
            opts[name].step()

        times = {name: [] for name in nets}
        for r in range(args.rounds + 2):  # two warm-up rounds
            for name in nets:
                start = time.perf_counter()
                step(name)
                if r >= 2:
                    times[name].append(time.perf_counter() - start)
    med = {n: statistics.median(t) for n, t in times.items()}
    print(
        json.dumps(
            {
                "threads": torch.get_num_threads(),
                "torch": torch.__version__,
                "batch_size": 128,
                "seconds_per_step": {n: round(v, 4) for n, v in med.items()},
                "ratio": round(med["resnet32 without BatchNorm"] / med["resnet32"], 3),
                "all_seconds": {n: [round(s, 4) for s in t] for n, t in times.items()},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
