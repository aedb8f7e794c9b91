"""CPU floating-point mode: flushing subnormal numbers to zero.

Late in training, and in every M2m translation once g is confident in the target class, the softmax
gives non-target probabilities below 1.2e-38; the cross-entropy gradient then carries *subnormal*
floats through the whole backward pass, and x86 CPUs handle each subnormal operand in microcode,
10-100x slower than a normal one.  In the throughput benchmark this made an M2m batch 2.4-3.2x slower
(``benchmarks/README.md``).  Flush-to-zero / denormals-are-zero (``torch.set_flush_denormal``)
replaces such values by 0.  The change is below float32 resolution wherever it can matter: a value
under 1.2e-38 added to any normal-sized gradient or weight is lost in rounding anyway, and M2m's
step ``eta * grad / (||grad|| + 1e-10)`` is below 1e-17 for any gradient that small.

The mode is a per-thread CPU register.  Threads inherit it when they are created, so it must be set
before torch's intra-op thread pool starts (the engine does it first thing in ``train``; the ``m2m``
CLI runs nothing before that).  :func:`flush_denormals` checks every intra-op thread and says
whether the setting took effect on all of them.  :func:`flushing_denormals` scopes it: the calling
thread's own mode is restored afterwards, so Python and NumPy code that runs after training keeps
IEEE subnormals (worker threads torch started inside the block keep flushing; that only affects
torch's own parallel work).
"""

from __future__ import annotations

import platform
import subprocess
import warnings
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, List, Optional, Tuple, Union

import torch

SUBNORMAL_BITS = 1 << 20  # a float32 bit pattern with a zero exponent: 1.47e-39, below the smallest normal 1.18e-38


def denormal_mode() -> str:
    """``"flush"`` if every intra-op thread flushes subnormal floats to zero, ``"keep"`` if none
    does, ``"mixed"`` otherwise.

    An element-wise op over a tensor large enough to be split across all threads, on a subnormal
    input: with flush-to-zero (or denormals-are-zero) a thread's part of the result is 0.
    (Calling this starts torch's thread pool.)
    """
    n = 4 * 32768 * max(1, torch.get_num_threads())  # 4 x torch's grain size per thread
    # built from its bit pattern: converting a Python float would itself be flushed on this thread
    x = torch.full((n,), SUBNORMAL_BITS, dtype=torch.int32).view(torch.float32)
    nonzero = int((x * 1.0).count_nonzero())
    return "flush" if nonzero == 0 else "keep" if nonzero == n else "mixed"


def flush_denormals(enabled: bool = True) -> bool:
    """Switch the process's CPU flush-to-zero mode on (or off); True if every thread now follows it.

    False means either the CPU does not support the mode or torch's thread pool was started before
    the call, so its worker threads kept the old mode (set it at the start of the program then).
    """
    if not torch.set_flush_denormal(enabled):
        return False
    return denormal_mode() == ("flush" if enabled else "keep")


def thread_flushes() -> bool:
    """Whether the calling thread flushes subnormals (a Python float multiplication uses the same unit)."""
    smallest = float.fromhex("0x1p-1074")  # parsed in software, so not itself flushed
    return smallest * 1.0 == 0.0


@contextmanager
def flushing_denormals(enabled: bool = True) -> Iterator[bool]:
    """Flush subnormal floats to zero (or not) inside the block; yields :func:`flush_denormals`'s answer.

    The calling thread's previous mode is restored on exit."""
    previous = thread_flushes()
    try:
        yield flush_denormals(enabled)
    finally:
        torch.set_flush_denormal(previous)


class ProcessSettings:
    """Every process-wide setting a run changes, set in one place and restored when the run ends.

    On entry: flush-to-zero (first: torch's CPU thread pool must not start before it, see above) and
    the intra-op thread count (``train.threads``; 0 leaves torch's choice).  Once the device is known,
    :meth:`for_device`: cuDNN's deterministic algorithms with the autotuner off on a GPU
    (``train.deterministic``), and under DistributedDataParallel a filter for a warning that is
    harmless here.  On exit every one of them is put back as it was, so a program that trains several
    runs (M2m's g, then f; a grid) or does other work afterwards sees its own settings again.

        with ProcessSettings(cfg.train) as settings:
            device = ...
            settings.for_device(device, distributed)
            ...
    """

    def __init__(self, train_cfg, threads: Optional[int] = None):
        self.cfg = train_cfg
        self.threads = train_cfg.threads if threads is None else threads
        self.flush_applied = True
        self._undo: List[Callable[[], None]] = []

    def __enter__(self) -> ProcessSettings:
        previous_flush = thread_flushes()
        self._undo.append(lambda: torch.set_flush_denormal(previous_flush))
        self.flush_applied = flush_denormals(self.cfg.flush_denormal)
        if self.threads > 0:
            previous_threads = torch.get_num_threads()
            torch.set_num_threads(self.threads)
            self._undo.append(lambda: torch.set_num_threads(previous_threads))
        return self

    def for_device(self, device: torch.device, distributed: bool) -> None:
        if device.type == "cuda" and self.cfg.deterministic:
            cudnn = torch.backends.cudnn
            previous = (cudnn.deterministic, cudnn.benchmark)
            cudnn.deterministic, cudnn.benchmark = True, False
            self._undo.append(
                lambda: (setattr(cudnn, "deterministic", previous[0]), setattr(cudnn, "benchmark", previous[1]))
            )
        if distributed:
            catcher = warnings.catch_warnings()
            catcher.__enter__()
            self._undo.append(lambda: catcher.__exit__(None, None, None))
            # a weight with a size-1 dimension (e.g. a 1-channel first conv) can have grad strides that
            # differ from DDP's bucket view only in that dimension: harmless, but warned at every step
            warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")

    def __exit__(self, *exc: Any) -> None:
        while self._undo:
            self._undo.pop()()


# ----------------------------------------------------------------------------------------------
# bf16 autocast: where it pays


def native_bf16_cpu() -> Tuple[bool, str]:
    """Whether this CPU computes bf16 in hardware (x86 AVX-512-BF16 or AMX, Arm BF16), and how we know.

    Only native BF16 makes bf16 autocast faster on a CPU: elsewhere oneDNN emulates it, about 3x slower
    than fp32 (measured on an AVX-512 CPU without BF16).  torch's own CPU probe first, then the flags the
    operating system reports (/proc/cpuinfo on Linux, sysctl on macOS).
    """
    probe = getattr(torch, "cpu", None)
    try:
        if probe._is_amx_tile_supported():
            return True, "AMX"
        if probe._is_avx512_bf16_supported():
            return True, "AVX-512-BF16"
    except AttributeError:  # an older or newer torch without these probes: ask the OS
        pass
    flags = _cpu_flags()
    if {"amx_bf16", "avx512_bf16"} & flags:
        return True, "AVX-512-BF16" if "avx512_bf16" in flags else "AMX"
    if "bf16" in flags:
        return True, "Arm BF16"
    return False, "no native BF16"


def _cpu_flags() -> set:
    try:
        with open("/proc/cpuinfo") as fh:
            text = fh.read()
    except OSError:
        text = ""
    flags = set()
    for line in text.splitlines():
        if line.lower().startswith(("flags", "features")):
            flags.update(line.split(":", 1)[-1].split())
    if not flags and platform.system() == "Darwin":
        try:
            out = subprocess.run(
                ["sysctl", "-n", "hw.optional.arm.FEAT_BF16"], capture_output=True, text=True, timeout=5
            )
            if out.stdout.strip() == "1":
                flags.add("bf16")
        except (OSError, subprocess.SubprocessError):
            pass
    return flags


def choose_amp(setting: str, device: torch.device, bf16_devices: Union[bool, Iterable[str]]) -> Tuple[str, str]:
    """The autocast a run uses, and why: ``train.amp=auto`` (the default) picks bf16 where the model's
    registration declares it measured faster (``bf16=("cpu",)``: device types; ``True``: every device) and
    the hardware computes bf16 natively (a CPU with AVX-512-BF16, AMX or Arm BF16; a GPU with bf16), and fp32
    everywhere else.  Measured: the small models (mlp, cnn) are slower in bf16 (Reuters MLP: an M2m run 32.5 s
    in bf16 against 26 s in fp32); ResNet-32 is 1.5-1.6x faster on a native-BF16 CPU but launch-bound on an
    H200, where bf16 is slower (DRS step 15.7 ms against 12.7 ms, M2m 0.170 s against 0.151 s); a CPU
    without native BF16 emulates it, about 3x slower.  ``none`` / ``bf16`` are taken as given."""
    if setting != "auto":
        return setting, f"train.amp={setting}"
    devices = ("cpu", "cuda") if bf16_devices is True else tuple(bf16_devices or ())
    if not devices:
        return "none", "auto: fp32, the model is too small to gain from bf16"
    if device.type not in devices:
        return "none", f"auto: fp32, bf16 is not measured faster for this model on {device.type}"
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16", "auto: bf16, the GPU supports it"
        return "none", "auto: fp32, the GPU has no bf16"
    if device.type == "cpu":
        native, how = native_bf16_cpu()
        if native:
            return "bf16", f"auto: bf16, the CPU has {how}"
        return "none", "auto: fp32, the CPU has no native BF16 (bf16 would be emulated, about 3x slower)"
    return "none", f"auto: fp32 on {device.type}"


def autocast(device: Union[torch.device, str], amp: str) -> torch.autocast:
    """The autocast context a run's forward passes run under: bf16 on ``device``'s type when ``amp`` is
    ``"bf16"`` (the run's resolved ``train.amp``, :func:`choose_amp`), else disabled (fp32)."""
    device_type = device if isinstance(device, str) else device.type
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=amp == "bf16")
