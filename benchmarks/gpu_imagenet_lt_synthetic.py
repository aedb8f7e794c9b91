"""ImageNet-LT-shaped synthetic benchmark for a GPU session (issue 8): prints images/second as JSON.

    python benchmarks/gpu_imagenet_lt_synthetic.py                        # H100/H200: bf16, ResNet-50, 128x128
    python benchmarks/gpu_imagenet_lt_synthetic.py --stream-images 4096 --workers 12 --engine-epochs 1
    python benchmarks/gpu_imagenet_lt_synthetic.py --device cpu --steps 2 --batch 4 --m2m-steps 1 \\
        --stream-images 64 --workers 2 --engine-epochs 1                  # a quick check that it runs

What it measures (one process, one device; an 8-GPU run is 8 of these, each with 1/8 of the global batch):

* ``train_step``: one SGD step of ResNet-50 (1,000 classes, the ImageNet-LT long tail 1280..5) on a batch of
  random uint8 128x128 images already on the device: uint8 -> [0, 1], forward under bf16 autocast,
  backward, SGD with momentum and weight decay.  Median over ``--steps`` after ``--warmup``.
* ``m2m_step`` (``--m2m-steps T``, 0 = skip): M2m's translation of the over-sampled batch (T gradient steps
  through f and a frozen ResNet-50 g; beta 0.999, gamma 0.9) and then the step, as from T0 on.
* ``stream`` (``--stream-images N``, 0 = skip): the engine's streaming path alone.  N synthetic JPEGs of
  ImageNet-like sizes (smooth random content) are written in the ImageNet-LT format to a temporary
  directory; the engine's ``StreamingBatches`` decodes them with ``--workers`` DataLoader workers
  (random-resized crop 128 + flip, pinned memory, copied to the device): loader images/second per process.
* ``engine`` (``--engine-epochs E``, 0 = skip; needs ``--stream-images``): the real ``train()`` on that tree
  with the imagenet-lt recipe (streamed, bf16, ResNet-50), whose time-per-epoch estimate line is reported.

Nothing is downloaded.  The result is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from major2minor import bench  # noqa: E402
from major2minor.config import Config, load_config  # noqa: E402
from major2minor.data import to_float  # noqa: E402
from major2minor.data.profiles import class_counts  # noqa: E402
from major2minor.data.sampling import oversampled_indices  # noqa: E402
from major2minor.methods.base import inverse_frequency  # noqa: E402
from major2minor.methods.m2m import M2mConfig, M2mTranslator  # noqa: E402
from major2minor.models import build_model  # noqa: E402

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


_sync = bench._sync
_timed = bench.time_batches
_entry = bench.timing_entry


def compute(args, dev: torch.device) -> Dict:
    """ERM (and M2m) steps on device-resident synthetic batches."""
    counts = class_counts("longtail", 1280, args.classes, 256.0)
    gen = torch.Generator().manual_seed(0)
    pool = 4 * args.batch
    x_all = torch.randint(0, 256, (pool, 3, args.size, args.size), dtype=torch.uint8, generator=gen).to(dev)
    y_all = torch.randint(0, args.classes, (pool,), generator=gen).to(dev)
    cfg = Config()
    cfg.model.name = args.model

    def make(seed: int):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            m = build_model(cfg, args.classes, (3, args.size, args.size), MEAN, STD).to(dev)
        return m.to(memory_format=torch.channels_last) if args.channels_last else m

    f = make(0)
    step_f = torch.compile(f) if args.compile else f
    opt = torch.optim.SGD(f.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    use_amp = args.amp == "bf16"

    def batch(oversample: bool):
        if oversample:
            idx = oversampled_indices(y_all.cpu(), inverse_frequency(counts), args.batch, gen)
        else:
            idx = torch.randint(0, pool, (args.batch,), generator=gen)
        idx = idx.to(dev)
        return to_float(x_all[idx]), y_all[idx]

    step = bench.train_step(step_f, opt, dev, args.channels_last, use_amp)

    out = {"train_step": _entry(_timed(lambda: step(*batch(False)), dev, args.warmup, args.steps), args.batch)}
    if args.m2m_steps > 0:
        g = make(1)
        translator = M2mTranslator(
            g,
            counts,
            M2mConfig(steps=args.m2m_steps),
            (0.0, 1.0),
            torch.Generator(device=dev).manual_seed(2),
            amp=args.amp,
        )
        share: List[float] = []

        m2m_step = bench.translated_step(translator, step_f, batch, step, dev, share)

        times = _timed(m2m_step, dev, args.warmup, args.steps)
        entry = _entry(times, args.batch)
        entry["translation_share"] = round(statistics.median(share[-args.steps :]) / statistics.median(times), 3)
        entry["m2m_steps"] = args.m2m_steps
        out["m2m_step"] = entry
    if dev.type == "cuda":
        out["max_memory_allocated_gib"] = round(torch.cuda.max_memory_allocated(dev) / 2**30, 2)
    return out


def write_tree(root: Path, n_images: int, classes: int, threads: int = 8) -> Dict:
    """ImageNet-LT-format tree of smooth random JPEGs (ImageNet-like sizes): train/val lists over
    ``classes`` classes (a long tail, every class at least 2 train images), 1 val and 1 test image each."""
    from PIL import Image

    n_train = max(n_images - 2 * classes, 2 * classes)
    tail = np.geomspace(1.0, 1 / 64, classes)
    counts = np.maximum(np.round(tail / tail.sum() * n_train), 2).astype(int)
    rng = np.random.default_rng(0)
    jobs, lines = [], {"train": [], "val": [], "test": []}
    for c in range(classes):
        wnid = f"n{c:08d}"
        for j in range(int(counts[c]) + 1):
            rel = f"train/{wnid}/{wnid}_{j}.JPEG"
            jobs.append(rel)
            lines["train" if j < counts[c] else "val"].append(f"{rel} {c}\n")
        rel = f"val/ILSVRC2012_val_{c:08d}.JPEG"
        jobs.append(rel)
        lines["test"].append(f"{rel} {c}\n")
    sizes = rng.integers(300, 500, (len(jobs), 2))

    def one(i: int) -> None:
        w, h = int(sizes[i, 0]), int(sizes[i, 1])
        r = np.random.default_rng(i)
        small = r.integers(0, 256, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((w, h), Image.BICUBIC)
        path = root / jobs[i]
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path, format="JPEG", quality=90)

    t = time.perf_counter()
    for rel in jobs:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(threads) as ex:
        list(ex.map(one, range(len(jobs))))
    (root / "ImageNet_LT").mkdir(exist_ok=True)
    for split, rows in lines.items():
        (root / "ImageNet_LT" / f"ImageNet_LT_{split}.txt").write_text("".join(rows))
    return {
        "images": len(jobs),
        "train": int(counts.sum()),
        "classes": classes,
        "write_seconds": round(time.perf_counter() - t, 1),
    }


def stream(args, dev: torch.device, root: Path) -> Dict:
    """The engine's streaming path alone: decoded, augmented batches delivered to the device."""
    from major2minor.data import build_dataset
    from major2minor.data.batches import StreamingBatches

    cfg = load_config(
        "imagenet-lt", [f"data.root={root}", f"data.workers={args.workers}", f"data.image_size={args.size}"]
    )
    bundle = build_dataset(cfg.data, 0)
    src = StreamingBatches(bundle.train, seed=0, device=dev)
    n = len(bundle.train)
    idx = torch.multinomial(
        torch.ones(n),
        max(n, args.batch * (args.stream_batches + 1)),
        replacement=True,
        generator=torch.Generator().manual_seed(0),
    )
    t0 = time.perf_counter()
    count, first = 0, None
    for x, y in src.batches(idx, args.batch, epoch=0):  # noqa: B007  (x is read after the loop)
        if first is None:
            _sync(dev)
            first, t1 = time.perf_counter() - t0, time.perf_counter()
            continue
        count += len(y)
        if count >= args.batch * args.stream_batches:
            break
    _sync(dev)
    seconds = time.perf_counter() - t1
    return {
        "workers": args.workers,
        "batch": args.batch,
        "images_timed": count,
        "first_batch_seconds": round(first, 3),
        "images_per_second": round(count / max(seconds, 1e-9), 1),
        "x_dtype": str(x.dtype),
        "x_device": str(x.device),
        "pinned": dev.type == "cuda",
    }


def engine(args, dev: torch.device, root: Path, run_dir: Path) -> Dict:
    """A real train() on the synthetic tree with the imagenet-lt recipe (streamed); reports its estimate."""
    from major2minor.pipeline import train

    overrides = [
        f"data.root={root}",
        f"data.workers={args.workers}",
        f"data.image_size={args.size}",
        f"model.name={args.model}",
        f"train.batch_size={args.batch}",
        f"train.eval_batch_size={args.batch}",
        f"train.epochs={args.engine_epochs}",
        "train.deferred_epoch=0",
        "optim.milestones=[]",
        f"train.amp={args.amp}",
        f"train.device={dev}",
        "train.progress=none",
        f"run.dir={run_dir}",
    ]
    cfg = load_config("imagenet-lt", overrides)
    messages: List[str] = []
    t = time.perf_counter()
    summary = train(cfg, log=messages.append)
    return {
        "epochs": args.engine_epochs,
        "wall_seconds": round(time.perf_counter() - t, 1),
        "train_seconds": round(summary["train_seconds"], 1),
        "estimate": next((m for m in messages if m.startswith("time estimate:")), None),
        "test_bacc": summary["test_at_last"]["bacc"],
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--batch", type=int, default=256, help="images per step on this device")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--model", default="resnet50")
    p.add_argument("--amp", choices=["none", "bf16"], default="bf16")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--m2m-steps", type=int, default=10, help="T of the timed M2m translation; 0 = skip")
    p.add_argument("--stream-images", type=int, default=0, help="synthetic JPEGs for the loader test; 0 = skip")
    p.add_argument("--stream-batches", type=int, default=20)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--engine-epochs", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    result: Dict = {
        "benchmark": "imagenet-lt-synthetic",
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev)
        if dev.type == "cuda"
        else platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "model": args.model,
        "classes": args.classes,
        "image_size": args.size,
        "batch": args.batch,
        "amp": args.amp,
        "channels_last": args.channels_last,
        "compile": args.compile,
        "threads": torch.get_num_threads(),
    }
    t = time.perf_counter()
    result.update(compute(args, dev))
    if args.stream_images > 0:
        with tempfile.TemporaryDirectory(prefix="m2m-imagenet-lt-synthetic-") as tmp:
            root = Path(tmp) / "imagenet"
            result["tree"] = write_tree(root, args.stream_images, min(args.classes, max(args.stream_images // 4, 2)))
            result["stream"] = stream(args, dev, root)
            if args.engine_epochs > 0:
                result["engine"] = engine(args, dev, root, Path(tmp) / "run")
    result["total_seconds"] = round(time.perf_counter() - t, 1)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
