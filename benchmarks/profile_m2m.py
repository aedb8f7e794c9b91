"""Where the time goes, and where the subnormal floats come from (not a test; prints JSON).

    python benchmarks/profile_m2m.py

On one thread (so op times add up), with the benchmark's setting (ResNet-32, CIFAR-LT-10-shaped
uint8 data, batch 128, channels-last):

* ``step``: shares of self CPU time per op family in three plain training steps (torch.profiler);
* ``translation``: the same for one M2m translation of an over-sampled batch (defaults: f and g
  folded, subnormals flushed);
* ``subnormals``: with flushing *off*, how many subnormal floats each op family outputs during one
  M2m translation, after a few DRS steps of f, as in ``m2m bench``.
"""

from __future__ import annotations

import collections
import json

import torch
from torch.profiler import ProfilerActivity, profile
from torch.utils._python_dispatch import TorchDispatchMode

from major2minor import bench
from major2minor.config import Config
from major2minor.data import Augment, augment_batch, to_float
from major2minor.data.profiles import class_counts
from major2minor.data.sampling import oversampled_indices
from major2minor.methods.base import inverse_frequency
from major2minor.methods.m2m import M2mConfig, M2mTranslator
from major2minor.models import build_model
from major2minor.numerics import flushing_denormals

FAMILIES = {
    "convolution": ("mkldnn_convolution", "convolution_backward"),
    "batch_norm": ("native_batch_norm", "native_batch_norm_backward"),
    "relu_backward": ("threshold_backward",),
}
SMALLEST_NORMAL = torch.finfo(torch.float32).tiny


def family(op: str) -> str:
    name = op.split("::")[-1].split(".")[0]
    return next((fam for fam, ops in FAMILIES.items() if name in ops), "other")


def shares(prof) -> dict:
    per = collections.Counter()
    for event in prof.key_averages():
        per[family(event.key)] += event.self_cpu_time_total
    total = sum(per.values())
    return {k: round(v / total, 3) for k, v in per.most_common()}


class SubnormalCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.counts = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel():
                self.counts[str(func.overloadpacket.__name__)] += int(((t != 0) & (t.abs() < SMALLEST_NORMAL)).sum())
        return out


def setting(seed: int = 0):
    counts = class_counts("longtail", 5000, 10, 100)
    gen = torch.Generator().manual_seed(seed)
    y_all = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    x_all = torch.randint(0, 256, (len(y_all), 3, 32, 32), dtype=torch.uint8, generator=gen)
    cfg = Config()
    cfg.model.name = "resnet32"

    def make(s):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(s)
            net = build_model(cfg, 10, (3, 32, 32), bench.CIFAR10_MEAN, bench.CIFAR10_STD)
        return net.to(memory_format=torch.channels_last)

    f, g = make(0), make(1)
    aug, aug_gen = Augment(crop_padding=4, flip=True), torch.Generator().manual_seed(1)

    def batch():
        idx = oversampled_indices(y_all, inverse_frequency(counts), 128, gen)
        return augment_batch(to_float(x_all[idx]), aug, aug_gen), y_all[idx]

    opt = torch.optim.SGD(f.parameters(), lr=0.1, momentum=0.9, weight_decay=2e-4)
    step = bench.train_step(f, opt, torch.device("cpu"), True, False)
    translator = M2mTranslator(g, counts, M2mConfig(), (0.0, 1.0), torch.Generator().manual_seed(2), channels_last=True)
    return f, batch, step, translator


def main() -> None:
    torch.set_num_threads(1)
    out = {"threads": 1, "torch": torch.__version__}
    with flushing_denormals(True):
        f, batch, step, translator = setting()
        for _ in range(3):
            step(*batch())
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(3):
                step(*batch())
        out["step"] = shares(prof)
        translator(f, *batch())
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            _, _, stats = translator(f, *batch())
        out["translation"] = {"slots_translated": stats.translated, **shares(prof)}
    with flushing_denormals(False):
        f, batch, step, translator = setting()
        for _ in range(4):
            step(*batch())
        counter = SubnormalCounter()
        with counter:
            _, _, stats = translator(f, *batch())
        out["subnormals"] = {"slots_translated": stats.translated, "outputs_by_op": dict(counter.counts.most_common(6))}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
