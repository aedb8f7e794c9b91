"""ImageNet-LT streamed through the engine (issue 8): a miniature tree in the real format (JPEG/PNG files
under train/ and val/, ImageNet_LT_{train,val,test}.txt lists), decoded and augmented by DataLoader
workers each epoch."""

import csv
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from major2minor import distributed as dist_utils
from major2minor.config import ConfigError, load_config
from major2minor.data import build_dataset
from major2minor.data.batches import InMemoryBatches, StreamedImages, StreamingBatches, is_streamed
from major2minor.data.sampling import batch_slices, epoch_indices
from major2minor.engine import build_model_seeded, evaluate, predict
from major2minor.methods.base import inverse_frequency
from major2minor.pipeline import train
from major2minor.rundir import RunDir

COUNTS = (10, 6, 3, 2)  # a long tail over 4 classes


def _image(path, seed, size, fmt):
    """Random pixels plus a class-coloured block (so the model has something to learn)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    w, h = size
    a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    a[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = [(seed * 53) % 256, 255 * (seed % 2), 128]
    Image.fromarray(a).save(path, format=fmt)


def make_mini_imagenet_lt(root):
    """train/WNID/*.JPEG|png (ImageNet train), val/ILSVRC2012_val_*.JPEG (ImageNet val), list files in
    root/ImageNet_LT: train COUNTS per class, val 2 per class from the train folders, test 3 per class."""
    lines = {"train": [], "val": [], "test": []}
    for c, n in enumerate(COUNTS):
        wnid = f"n0{c:07d}"
        for j in range(n + 2):
            fmt, ext = ("PNG", "png") if j % 4 == 3 else ("JPEG", "JPEG")
            rel = f"train/{wnid}/{wnid}_{j}.{ext}"
            _image(root / rel, 1000 * c + j, (44 + 3 * (j % 3), 38 + 2 * (j % 5)), fmt)
            lines["train" if j < n else "val"].append(f"{rel} {c}\n")
        for j in range(3):
            rel = f"val/ILSVRC2012_val_{c:04d}{j}.JPEG"
            _image(root / rel, 5000 + 10 * c + j, (40 + 4 * j, 48), "JPEG")
            lines["test"].append(f"{rel} {c}\n")
    (root / "ImageNet_LT").mkdir(parents=True, exist_ok=True)
    for split, rows in lines.items():
        (root / "ImageNet_LT" / f"ImageNet_LT_{split}.txt").write_text("".join(rows))
    return root


def _args(root, run_dir, *extra):
    """The imagenet-lt recipe (streamed) shrunk: 16x16 images, a small CNN, 2 epochs, DRS from epoch 2."""
    return [
        f"data.root={root}",
        "data.image_size=16",
        "data.workers=2",
        "data.cache=" + str(root / "cache"),
        "model.name=cnn",
        "model.width=8",
        "train.batch_size=8",
        "train.eval_batch_size=5",
        "train.epochs=2",
        "train.deferred_epoch=1",
        "optim.milestones=[1]",
        "train.threads=1",
        "train.progress=none",
        "train.device=cpu",
        f"run.dir={run_dir}",
        *extra,
    ]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_mini_imagenet_lt(tmp_path_factory.mktemp("imagenet"))


@pytest.fixture(scope="module")
def streamed_run(tree, tmp_path_factory):
    run = tmp_path_factory.mktemp("stream") / "drs"
    cfg = load_config("imagenet-lt", _args(tree, run, "method=drs"))
    messages = []
    summary = train(cfg, log=messages.append)
    return cfg, run, summary, messages


def _promised_histograms(cfg, bundle, epochs, world=1):
    """The class histogram of each epoch's global stream (plain shuffle before T0, 1/N_y after)."""
    gen = torch.Generator().manual_seed(cfg.train.seed)
    out = []
    for epoch in range(epochs):
        weights = inverse_frequency(bundle.train_counts) if epoch >= cfg.train.deferred_epoch else None
        idx = epoch_indices(bundle.train.y, weights, gen)
        kept = torch.cat([b for b in batch_slices(idx, cfg.train.batch_size) if len(b) >= world])
        out.append(torch.bincount(bundle.train.y[kept], minlength=len(COUNTS)).tolist())
    return out


def test_recipe_streams_imagenet_lt(tree):
    cfg = load_config("imagenet-lt", [f"data.root={tree}"])
    assert cfg.data.stream and cfg.data.workers >= 1
    bundle = build_dataset(cfg.data, 0)
    assert is_streamed(bundle.train) and is_streamed(bundle.val) and is_streamed(bundle.test)
    assert bundle.train_counts == list(COUNTS) and bundle.input_shape == (3, 128, 128) and bundle.is_image
    assert bundle.bounds == (0.0, 1.0) and not bundle.augment.active  # augmentation is per sample
    manifest = bundle.manifest()
    assert manifest["streaming"] and manifest["sizes"] == {"train": 21, "val": 8, "test": 12}
    x = bundle.test.x[torch.tensor([0, 5])]  # indexing decodes
    assert x.shape == (2, 3, 128, 128) and x.dtype == torch.uint8
    with pytest.raises(ConfigError, match="no streaming path"):
        load_config("digits-lt", ["data.stream=true"])
    with pytest.raises(ConfigError, match="smote.*streamed"):
        load_config("imagenet-lt", [f"data.root={tree}", "method=smote"])


def test_streamed_training_histogram_is_the_samplers_promise(streamed_run):
    cfg, run, summary, messages = streamed_run
    bundle = build_dataset(cfg.data, cfg.train.seed)
    rows = list(csv.DictReader(open(run / "log.csv")))
    assert len(rows) == 2
    promised = _promised_histograms(cfg, bundle, 2)
    assert promised[0] == list(COUNTS)  # before T0: every image once
    for row, expected in zip(rows, promised):
        assert [int(v) for v in row["seen_per_class"].split()] == expected
    assert json.loads((run / "manifest.json").read_text())["streaming"] is True
    assert any("streamed by 2 loader workers" in m for m in messages)
    estimate = [m for m in messages if m.startswith("time estimate:")]
    assert len(estimate) == 1 and "per epoch" in estimate[0] and "for the 2 epoch(s) left" in estimate[0]


def test_streamed_evaluation_equals_in_memory_evaluation(streamed_run):
    cfg, run, summary, _ = streamed_run
    streamed = build_dataset(cfg.data, cfg.train.seed)
    cfg.data.stream = False  # decode once, same evaluation transform
    memory = build_dataset(cfg.data, cfg.train.seed)
    assert not is_streamed(memory.test) and torch.equal(memory.test.y, streamed.test.y)
    model = build_model_seeded(cfg, memory, 0, torch.device("cpu"))
    model.load_state_dict(torch.load(run / "best.pt", weights_only=False)["model"])
    cpu = torch.device("cpu")
    assert torch.equal(streamed.test.x[torch.arange(12)], memory.test.x)  # the same pixels
    assert torch.equal(predict(model, streamed.test.x, 5, cpu), predict(model, memory.test.x, 5, cpu))
    single = evaluate(model, memory.test, 4, memory.train_counts, cpu)
    for key in ("acc", "bacc", "gm", "per_class_recall", "loss"):
        assert summary["test_at_best"][key] == single[key]


def test_streamed_batches_do_not_depend_on_workers_or_ranks(tree):
    cfg = load_config("imagenet-lt", [f"data.root={tree}", "data.image_size=16", "data.workers=0"])
    bundle = build_dataset(cfg.data, 0)
    idx = epoch_indices(bundle.train.y, inverse_frequency(bundle.train_counts), torch.Generator().manual_seed(3))

    def run(workers, rank=0, world=1, epoch=0):
        bundle.train.x.workers = workers
        src = StreamingBatches(bundle.train, seed=7, dist=dist_utils.DistInfo(rank, world))
        return list(src.batches(idx, 8, epoch))

    one = run(0)
    assert [len(y) for _, y in one] == [8, 8, 5] and one[0][0].dtype == torch.float32
    assert 0.0 <= float(one[0][0].min()) and float(one[0][0].max()) <= 1.0
    assert torch.equal(torch.cat([y for _, y in one]), bundle.train.y[idx])  # labels follow the stream
    two_workers = run(2)
    for (xa, ya), (xb, yb) in zip(one, two_workers):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    ranks = [run(0, r, 2) for r in range(2)]  # each rank: its share of each global batch
    for b, (x, y) in enumerate(one):
        assert torch.equal(torch.cat([ranks[0][b][0], ranks[1][b][0]]), x)
        assert torch.equal(torch.cat([ranks[0][b][1], ranks[1][b][1]]), y)
    assert not torch.equal(run(0, epoch=1)[0][0], one[0][0])  # a new epoch draws new crops
    with pytest.raises(TypeError):
        StreamingBatches(build_dataset(load_config("digits-lt").data, 0).train, seed=0)
    assert not InMemoryBatches.streamed and isinstance(bundle.val.x[1:], StreamedImages)


def test_random_resized_crop_from_file_draws_as_from_an_image(tree):
    from major2minor.data.datasets.imagenet_lt import RandomResizedCropFlip

    t = RandomResizedCropFlip(16)
    png = tree / "train" / "n00000000" / "n00000000_3.png"  # no DCT scaling for PNG: identical
    for seed in range(5):
        a = t.load(png, torch.Generator().manual_seed(seed))
        b = t(Image.open(png).convert("RGB"), torch.Generator().manual_seed(seed))
        assert np.array_equal(np.asarray(a), np.asarray(b))
    jpeg = tree / "train" / "n00000000" / "n00000000_0.JPEG"
    assert t.load(jpeg, torch.Generator().manual_seed(0)).size == (16, 16)


def test_m2m_translates_streamed_batches(tree, streamed_run, tmp_path):
    _, g_run, _, _ = streamed_run
    cfg = load_config(
        "imagenet-lt",
        _args(
            tree,
            tmp_path / "m2m",
            "method=m2m",
            f"m2m.generator=[{g_run}]",
            "m2m.gamma=0.0",
            "m2m.beta=0.5",
            "m2m.steps=2",
        ),
    )
    messages = []
    summary = train(cfg, log=messages.append)
    assert summary["m2m"]["slots"] > 0 and summary["m2m"]["accepted"] > 0
    assert any("M2m: translating from epoch 2" in m for m in messages)  # its own estimate, on decoded images
    rows = list(csv.DictReader(open(tmp_path / "m2m" / "log.csv")))
    assert rows[0]["m2m_slots"] == "" and int(rows[1]["m2m_slots"]) > 0
    seen = [int(v) for v in rows[1]["seen_per_class"].split()]
    accepted = [int(v) for v in rows[1]["m2m_accepted_per_class"].split()]
    assert sum(seen) == sum(COUNTS) and all(s >= a for s, a in zip(seen, accepted))


def test_streamed_run_resumes_exactly(tree, streamed_run, tmp_path, monkeypatch):
    _, full_run, full, _ = streamed_run
    real_write = RunDir.write_log

    def crash_at_second_epoch(self, rows):
        if len(rows) == 2:
            raise KeyboardInterrupt("simulated crash during epoch 2")
        real_write(self, rows)

    cfg = load_config("imagenet-lt", _args(tree, tmp_path / "cut", "method=drs"))
    monkeypatch.setattr(RunDir, "write_log", crash_at_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, log=None)
    monkeypatch.setattr(RunDir, "write_log", real_write)
    resumed = train(cfg, resume=True, log=None)
    assert resumed["test_at_best"] == full["test_at_best"] and resumed["test_at_last"] == full["test_at_last"]


# ----------------------------------------------------------------------------------------------
# two gloo processes


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # two processes under torchrun
def test_streaming_under_two_gloo_processes(tree, tmp_path):
    run = tmp_path / "ddp"
    args = _args(tree, run, "method=drs", "data.workers=1")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        "-m",
        "major2minor",
        "train",
        "imagenet-lt",
        *args,
    ]
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=240,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2

    cfg = load_config("imagenet-lt", args)
    bundle = build_dataset(cfg.data, cfg.train.seed)
    rows = list(csv.DictReader(open(run / "log.csv")))
    for row, expected in zip(rows, _promised_histograms(cfg, bundle, 2, world=2)):
        assert [int(v) for v in row["seen_per_class"].split()] == expected

    cfg.data.stream = False  # gathered streamed evaluation == one process, in memory
    memory = build_dataset(cfg.data, cfg.train.seed)
    model = build_model_seeded(cfg, memory, 0, torch.device("cpu"))
    model.load_state_dict(torch.load(run / "best.pt", weights_only=False)["model"])
    single = evaluate(model, memory.test, 4, memory.train_counts, torch.device("cpu"))
    for key in ("acc", "bacc", "gm", "per_class_recall"):
        assert summary["test_at_best"][key] == single[key]
