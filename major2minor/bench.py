"""Throughput benchmark (``m2m bench`` / ``benchmarks/throughput.py``): seconds per batch, not a test.

(:func:`run` is the library; the command line, which prints its JSON, is :mod:`major2minor.cli.bench`.)

Synthetic CIFAR-LT-10-shaped data (uint8 3x32x32 images with the rho = 100 class counts; the pixel
content does not matter for speed), ResNet-32, batch 128.  Times, after warm-up, the median over
several batches of:

* ``erm``: one training step on a uniformly shuffled batch (augment, forward, backward, SGD step);
* ``drs``: the same on the over-sampled (1/N_y) stream;
* ``m2m``: the over-sampled batch translated by M2m (beta 0.999, lam 0.5, gamma 0.9, eta 0.1, T 10),
  then the step.

It reports images per second, the share of M2m's time spent translating, the achieved GFLOP/s
(FLOPs counted by ``torch.utils.flop_counter`` on one step) and its fraction of the machine's peak as
measured by a large matmul in the same run, with device, dtype, torch version and thread count.
"""

from __future__ import annotations

import platform
import statistics
import time
from dataclasses import dataclass
from typing import Callable, ClassVar, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F

from major2minor.config import Check, Config, ConfigError, Each, Interval, Matches, OneOf, TrainConfig
from major2minor.data import Augment, augment_batch, to_float
from major2minor.data.profiles import class_counts
from major2minor.data.sampling import oversampled_indices
from major2minor.methods.base import inverse_frequency
from major2minor.methods.m2m import M2mConfig, M2mTranslator
from major2minor.models import build_model
from major2minor.models.fold import fold_batchnorm
from major2minor.numerics import autocast, choose_amp, flushing_denormals, native_bf16_cpu
from major2minor.registry import MODELS

METHODS_TIMED = ("erm", "drs", "m2m")  # what Workload.functions can time
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak_gflops(device: torch.device, dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """Achievable GFLOP/s of a large square matmul: the yardstick for 'fraction of peak'."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    _sync(device)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        _sync(device)
        times.append(time.perf_counter() - t)
    return 2 * n**3 / min(times) / 1e9


def count_flops(fn: Callable[[], None]) -> float:
    """FLOPs of one call, counted per aten op with torch's FLOP formulas.

    A bare dispatch mode rather than ``FlopCounterMode``: the latter's module tracker hooks fail
    inside ``torch.autograd.grad`` (M2m's input gradients).
    """
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    class Counter(TorchDispatchMode):
        total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            formula = flop_registry.get(func._overloadpacket)
            if formula is not None:
                Counter.total += formula(*args, **kwargs, out_val=out)
            return out

    with Counter():
        fn()
    return float(Counter.total)


def translated_step(
    translator,
    f,
    next_batch: Callable,
    train_step: Callable,
    device: torch.device,
    translate_times: List[float],
    translated: Optional[List[int]] = None,
) -> Callable[[], None]:
    """One M2m batch: draw an over-sampled batch, translate it (timed into ``translate_times``; the number
    of slots translated into ``translated``), step."""

    def run() -> None:
        x, y = next_batch(True)
        _sync(device)
        t = time.perf_counter()
        x, y, stats = translator(f, x, y)
        _sync(device)
        translate_times.append(time.perf_counter() - t)
        if translated is not None:
            translated.append(stats.translated)
        train_step(x, y)

    return run


def train_step(
    model, optimizer, device: torch.device, channels_last: bool, use_amp: bool
) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """One plain training step on a float batch: (channels-last,) forward under optional bf16 autocast,
    cross-entropy, backward, optimiser step."""

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, "bf16" if use_amp else "none"):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def timing_entry(times: List[float], batch_size: int) -> Dict:
    """Median seconds per batch, images per second, and every timing."""
    med = statistics.median(times)
    return {
        "seconds_per_batch": round(med, 4),
        "images_per_second": round(batch_size / med, 1),
        "all_seconds": [round(t, 4) for t in times],
    }


def time_batches(fn: Callable[[], None], device: torch.device, warmup: int, repeats: int) -> List[float]:
    for _ in range(warmup):
        fn()
    _sync(device)
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        _sync(device)
        out.append(time.perf_counter() - t)
    return out


@dataclass
class BenchOptions:
    """What ``m2m bench`` times and how (the command's options)."""

    device: str = "cpu"
    batch_size: int = 128
    repeats: int = 5
    warmup: int = 2
    amp: str = "auto"  # auto: bf16 where it pays (numerics.choose_amp), as train.amp
    compile_model: bool = False
    channels_last: bool = True
    threads: int = 0
    methods: Sequence[str] = METHODS_TIMED
    translate_rejected: bool = False
    steps: int = 10
    fold_generator: bool = True
    fold_classifier: bool = True
    flush_denormal: bool = True

    # the command's option for each field (as the errors name them); the same rules as train.* and m2m.*
    checks: ClassVar[Dict[str, Check]] = {
        "device": Matches(r"cpu|cuda(:\d+)?|mps", "cpu, cuda or cuda:N", hint="the default is cpu"),
        "batch_size": Interval(1, None, hint="the paper uses 128"),
        "repeats": Interval(1, None, hint="the median needs at least one timed batch; the default is 5"),
        "warmup": Interval(0, None, hint="untimed batches first; 0 for none, the default is 2"),
        "amp": TrainConfig.checks["amp"],
        "threads": TrainConfig.checks["threads"],
        "methods": Each(OneOf(METHODS_TIMED)),
        "steps": M2mConfig.checks["steps"],
    }

    def check(self) -> None:
        """Every option against its rule, before any work: ``--batch-size=0 must be >= 1; ...``."""
        for name, rule in self.checks.items():
            option, value = "--" + name.replace("_", "-"), getattr(self, name)
            if isinstance(rule, Each):  # name the one bad item, with a did-you-mean
                if not value:
                    raise ConfigError(f"{option} is empty; give a comma-separated list of {', '.join(METHODS_TIMED)}.")
                value = next((v for v in value if not rule.check.allows(v)), None)
                rule = rule.check
            if value is not None and not rule.allows(value):
                raise rule.error(option, value)
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"--device={self.device} but no CUDA device is available; use --device cpu.")


def run(**options) -> Dict:
    """Time the methods (keyword arguments: the fields of :class:`BenchOptions`); returns the JSON dict.

    Subnormal floats are flushed to zero while it runs unless ``flush_denormal`` is False (first thing:
    threads started later inherit the mode; see ``major2minor.numerics``)."""
    opts = BenchOptions(**options)
    opts.check()
    requested = opts.amp
    # the rule train.amp=auto follows for the benchmarked model, from its registration
    opts.amp, amp_reason = choose_amp(opts.amp, torch.device(opts.device), MODELS.entry("resnet32").info.bf16)
    with flushing_denormals(opts.flush_denormal) as flushed:
        if opts.threads > 0:
            torch.set_num_threads(opts.threads)
        work = Workload(opts)
        result = {
            **work.describe(),
            "amp_requested": requested,
            "amp_reason": amp_reason,
            "cpu_native_bf16": native_bf16_cpu()[1],
            "flush_denormal_all_threads": flushed,
            "methods": {},
        }
        for name in opts.methods:
            result["methods"][name] = work.measure(name, result["matmul_peak_gflops"])
        return result


class Workload:
    """CIFAR-LT-10-shaped synthetic data on the device, ResNet-32 f and g, and one step function per method."""

    def __init__(self, opts: BenchOptions):
        self.opts, dev = opts, torch.device(opts.device)
        self.device = dev
        self.gen = torch.Generator().manual_seed(0)
        self.counts = class_counts("longtail", 5000, 10, 100)
        y_all = torch.cat([torch.full((n,), c) for c, n in enumerate(self.counts)])
        self.x_all = torch.randint(0, 256, (len(y_all), 3, 32, 32), dtype=torch.uint8, generator=self.gen).to(dev)
        self.y_all = y_all.to(dev)
        self.f, g = self.make_model(0), self.make_model(1)
        self.step_f = torch.compile(self.f) if opts.compile_model else self.f
        self.fold_generator = opts.fold_generator
        step_g = g
        if opts.compile_model:  # fold first (torch.fx cannot trace a compiled module), then compile
            step_g = torch.compile(fold_batchnorm(g) if opts.fold_generator else g)
            self.fold_generator = False
        m2m_cfg = M2mConfig(
            beta=0.999,
            lam=0.5,
            gamma=0.9,
            step_size=0.1,
            steps=opts.steps,
            translate_rejected=opts.translate_rejected,
            fold_generator=self.fold_generator,
            fold_classifier=opts.fold_classifier,
        )
        self.translator = M2mTranslator(
            step_g,
            self.counts,
            m2m_cfg,
            (0.0, 1.0),
            torch.Generator(device=dev).manual_seed(2),
            amp=opts.amp,
            channels_last=opts.channels_last,
        )
        opt = torch.optim.SGD(self.f.parameters(), lr=0.1, momentum=0.9, weight_decay=2e-4)
        self.aug, self.aug_gen = Augment(crop_padding=4, flip=True), torch.Generator(device=dev).manual_seed(1)
        self.weights = inverse_frequency(self.counts)
        self.step = train_step(self.step_f, opt, dev, opts.channels_last, opts.amp == "bf16")
        self.translate_time: List[float] = []
        self.slots: List[int] = []
        m2m_step = translated_step(
            self.translator, self.step_f, self.batch, self.step, dev, self.translate_time, self.slots
        )
        self.functions = {
            "erm": lambda: self.step(*self.batch(False)),
            "drs": lambda: self.step(*self.batch(True)),
            "m2m": m2m_step,
        }

    def make_model(self, seed: int):
        cfg = Config()
        cfg.model.name = "resnet32"
        cfg.train.channels_last = self.opts.channels_last
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            m = build_model(cfg, 10, (3, 32, 32), CIFAR10_MEAN, CIFAR10_STD).to(self.device)
        return m.to(memory_format=torch.channels_last) if self.opts.channels_last else m

    def batch(self, oversample: bool):
        if oversample:
            idx = oversampled_indices(self.y_all, self.weights, self.opts.batch_size, self.gen)
        else:
            idx = torch.randint(0, len(self.y_all), (self.opts.batch_size,), generator=self.gen)
        idx = idx.to(self.device)
        return augment_batch(to_float(self.x_all[idx]), self.aug, self.aug_gen), self.y_all[idx]

    def describe(self) -> Dict:
        o, dev = self.opts, self.device
        use_amp = o.amp == "bf16"
        return {
            "device": str(dev),
            "device_name": torch.cuda.get_device_name(dev)
            if dev.type == "cuda"
            else platform.processor() or platform.machine(),
            "dtype": "bf16-autocast" if use_amp else "fp32",
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "batch_size": o.batch_size,
            "compile": o.compile_model,
            "channels_last": o.channels_last,
            "translate_rejected": o.translate_rejected,
            "m2m_steps": o.steps,
            "fold_generator": self.fold_generator,
            "fold_classifier": o.fold_classifier,
            "flush_denormal": o.flush_denormal,
            "matmul_peak_gflops": round(matmul_peak_gflops(dev, torch.bfloat16 if use_amp else torch.float32), 1),
        }

    def measure(self, name: str, peak: float) -> Dict:
        """Median seconds per batch of one method, its FLOP rate and (M2m) the translation's share."""
        o = self.opts
        self.translate_time.clear()
        self.slots.clear()
        fn = self.functions[name]
        times = time_batches(fn, self.device, o.warmup, o.repeats)
        timed_translate, timed_slots = self.translate_time[-o.repeats :], self.slots[-o.repeats :]  # not the FLOP run
        flops = count_flops(fn) if not o.compile_model else None
        med = statistics.median(times)
        entry = timing_entry(times, o.batch_size)
        if flops:
            entry["gflop_per_batch"] = round(flops / 1e9, 2)
            entry["achieved_gflops"] = round(flops / 1e9 / med, 1)
            entry["fraction_of_matmul_peak"] = round(flops / 1e9 / med / peak, 3)
        if name == "m2m":
            entry["translation_share"] = round(statistics.median(timed_translate) / med, 3)
            # the slot count varies from batch to batch; per slot, runs compare despite that
            entry["translated_slots"] = timed_slots
            per_slot = [t / n for t, n in zip(timed_translate, timed_slots) if n]
            entry["translation_seconds_per_slot"] = round(statistics.median(per_slot), 5) if per_slot else None
        return entry
