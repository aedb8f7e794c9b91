"""Two CPU processes with gloo under torchrun, on digits-lt (design section 6)."""

import csv
import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from major2minor.config import load_config
from major2minor.data import build_dataset
from major2minor.data.sampling import batch_slices, epoch_indices
from major2minor.engine import build_model_seeded, evaluate
from major2minor.methods.base import inverse_frequency

ARGS = [
    "method=drs",
    "train.epochs=4",
    "train.deferred_epoch=2",
    "optim.warmup_epochs=1",
    "optim.milestones=[3]",
    "train.threads=1",
    "train.progress=none",
]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(run_dir, *extra, nproc=2):
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(nproc),
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        "-m",
        "major2minor",
        "train",
        *ARGS,
        f"run.dir={run_dir}",
        *extra,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("ddp") / "run"
    proc = _torchrun(run)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run


@pytest.mark.slow  # two processes under torchrun
def test_two_gloo_processes_train_shard_and_gather(ddp_run):
    run = ddp_run
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2

    # 1. the class histogram seen across both ranks is exactly the sampler's promise: the global
    #    stream (plain shuffle before T0, 1/N_y over-sampling from T0 on), redrawn each epoch
    cfg = load_config("digits-lt", ARGS + [f"run.dir={run}"])
    bundle = build_dataset(cfg.data, cfg.train.seed)
    gen = torch.Generator().manual_seed(cfg.train.seed)
    rows = list(csv.DictReader(open(run / "log.csv")))
    for epoch, row in enumerate(rows):
        weights = inverse_frequency(bundle.train_counts) if epoch >= 2 else None
        idx = epoch_indices(bundle.train.y, weights, gen)
        kept = torch.cat([b for b in batch_slices(idx, cfg.train.batch_size) if len(b) >= 2])
        expected = torch.bincount(bundle.train.y[kept], minlength=10).tolist()
        assert [int(v) for v in row["seen_per_class"].split()] == expected
        if epoch < 2:
            assert expected == bundle.train_counts

    # 2. the gathered evaluation equals a single-process evaluation of the same weights
    model = build_model_seeded(cfg, bundle, 0, torch.device("cpu"))
    model.load_state_dict(torch.load(run / "best.pt", weights_only=False)["model"])
    single = evaluate(model, bundle.test, 10, bundle.train_counts, torch.device("cpu"))
    for key in ("acc", "bacc", "gm", "per_class_recall"):
        assert summary["test_at_best"][key] == single[key]


def _rows(run):
    return [{k: v for k, v in r.items() if "seconds" not in k} for r in csv.DictReader(open(run / "log.csv"))]


@pytest.mark.slow  # torchrun, killed and resumed
def test_distributed_run_killed_and_resumed_matches_uninterrupted(ddp_run, tmp_path):
    import signal
    import time

    run = tmp_path / "cut"
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
        *ARGS,
        f"run.dir={run}",
    ]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    deadline = time.time() + 200
    while time.time() < deadline and proc.poll() is None:
        if (run / "log.csv").exists() and len((run / "log.csv").read_text().splitlines()) >= 3:  # 2 epochs
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run / "summary.json").exists(), "the run finished before it could be killed"
    resumed = subprocess.run(
        cmd + ["--resume"],
        capture_output=True,
        text=True,
        timeout=240,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = json.loads((ddp_run / "summary.json").read_text())
    b = json.loads((run / "summary.json").read_text())
    assert a["test_at_best"] == b["test_at_best"] and a["test_at_last"] == b["test_at_last"]
    assert _rows(ddp_run) == _rows(run)


@pytest.mark.parametrize("name,expected", [("cuda", 0), ("auto", 0), ("cuda:1", 1)])
def test_cuda_device_gets_an_explicit_index(monkeypatch, name, expected):
    """torch.cuda.set_device refuses a bare "cuda" (seen on a GPU with torch 2.11): resolve the index."""
    from major2minor import distributed

    chosen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: chosen.append(d))
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    _, device = distributed.setup(name)
    assert device == torch.device("cuda", expected) and chosen == [device]


def test_cuda_index_beyond_the_visible_devices_is_refused(monkeypatch):
    from major2minor import distributed

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(ValueError, match="cuda:3.*only 1 CUDA device"):
        distributed.setup("cuda:3")
