"""Reliability: bad input refused early and clearly, nothing lost on a crash, exact resume.

The SIGKILL test runs the real command line (``python -m major2minor train``) in subprocesses with
stdin closed, kills one with SIGKILL in the M2m phase, resumes it and compares it with an
uninterrupted run of the same seed.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import interrupted_run, read_log_rows

import major2minor.checkpoint as checkpoint
import major2minor.engine as engine
from major2minor.atomic import atomic_write_text
from major2minor.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_resume_checkpoint,
    load_weights,
    save_checkpoint,
)
from major2minor.cli import main
from major2minor.config import ConfigError, load_config
from major2minor.data import DataBundle, Split, build_dataset
from major2minor.engine import NonFiniteLossError
from major2minor.models import build_model
from major2minor.pipeline import train
from major2minor.rundir import RunDir, RunDirError, prepare_run_dir
from major2minor.runlog import write_log as write_csv

REPO = Path(__file__).resolve().parents[1]
PINNED = ["model.name=cnn", "model.width=32", "optim.lr=0.1"]  # so that recipe tuning cannot silence M2m here


@pytest.fixture(autouse=True)
def _no_figures(monkeypatch):
    """The per-run figures are not under test here and cost a second a run."""
    monkeypatch.setattr(RunDir, "write_figures", lambda *a, **k: [])


# ------------------------------------------------------------------------------------------------
# 1. bad input is refused early, naming the parameter, the value, what is allowed and the fix


def test_ratio_below_one_is_refused():
    with pytest.raises(ConfigError, match=r"data\.ratio=0\.5 must be >= 1.*use 1 for a balanced set"):
        load_config(None, ["data.ratio=0.5"])


def test_deferred_epoch_not_before_the_end_is_refused():
    with pytest.raises(ConfigError, match=r"train\.deferred_epoch=30 must be in \[0, train\.epochs=30\).*lower it"):
        load_config(None, ["method=drs", "train.epochs=30", "train.deferred_epoch=30"])
    with pytest.raises(ConfigError, match=r"train\.deferred_epoch=40"):
        load_config(None, ["method=m2m", "train.epochs=30", "train.deferred_epoch=40"])
    load_config(None, ["method=erm", "train.epochs=30", "train.deferred_epoch=40"])  # not used by ERM


@pytest.mark.parametrize(
    "override, pattern",
    [
        ("method=m2n", r"method='m2n' is not a known method preset; valid: .*m2m.*Did you mean 'm2m'"),
        ("loss.name=focall", r"loss\.name='focall' is not a known loss; valid: .*Did you mean 'focal'"),
        ("model.name=resnet23", r"model\.name='resnet23' is not a known model; valid: .*resnet32.*Did you mean"),
        ("data.name=digits", r"data\.name='digits' is not a known data set; valid: .*digits-lt"),
        ("rebalance.name=drx", r"rebalance\.name='drx' is not a known re-balancing; valid: .*drs"),
        ("optim.lrr=0.1", r"unknown config key 'optim\.lrr'\. Did you mean 'optim\.lr'"),
    ],
)
def test_unknown_names_list_valid_ones(override, pattern):
    with pytest.raises((ConfigError, KeyError), match=pattern):
        load_config(None, [override])


@pytest.mark.parametrize(
    "overrides, pattern",
    [
        (
            ["method=m2m", "m2m.self_generator=true", "m2m.generator=/x"],
            r"m2m\.self_generator=true .* conflicts with m2m\.generator",
        ),
        (["loss=ldam", "model.head=linear"], r"loss\.name=ldam needs the cosine .*model\.head=auto"),
        (["optim.lr=nan"], r"optim\.lr=nan must be a finite number"),
        (["m2m.beta=inf"], r"m2m\.beta=inf must be a finite number"),
        (["train.epochs=inf"], r"train\.epochs=inf must be a finite integer"),
        (["data.n_max=0"], r"data\.n_max=0 must be >= 1"),
        (["optim.momentum=1.5"], r"optim\.momentum=1\.5 must be in \[0, 1\)"),
        (["data.step_minor_fraction=2"], r"data\.step_minor_fraction=2\.0 must be in \[0, 1\]"),
        (["data.val_per_class=-1"], r"data\.val_per_class=-1 must be >= 1"),
        (["m2m.beta=1"], r"m2m\.beta=1\.0 must be in \[0, 1\)"),
    ],
)
def test_invalid_or_conflicting_options_are_refused(overrides, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(None, overrides)


def test_missing_generator_path_is_refused_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match=r"m2m\.generator=.*nope does not exist; give a finished run directory"):
        load_config(None, ["method=m2m", f"m2m.generator={tmp_path / 'nope'}"])


def test_cli_prints_one_line_and_exit_code_2(capsys):
    assert main(["train", "data.ratio=0.5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("m2m: error: data.ratio=0.5") and "\n" not in err


def test_labels_out_of_range_and_empty_classes_are_refused():
    x = torch.zeros(4, 3)
    ok = Split(x, torch.tensor([0, 1, 2, 2]))
    with pytest.raises(ValueError, match=r"toy: val label 3 is outside \[0, 3\).*label column"):
        DataBundle("toy", ok, Split(x, torch.tensor([0, 1, 2, 3])), ok, 3, ["a", "b", "c"], None)
    with pytest.raises(ValueError, match=r"toy: test label -1 is outside \[0, 3\)"):
        DataBundle("toy", ok, ok, Split(x, torch.tensor([0, -1, 2, 2])), 3, ["a", "b", "c"], None)
    with pytest.raises(ValueError, match=r"toy: classes \[1\] \(\['b'\]\) have no training samples"):
        DataBundle("toy", Split(x, torch.tensor([0, 0, 2, 2])), ok, ok, 3, ["a", "b", "c"], None)


def test_profile_leaving_a_class_empty_is_refused():
    cfg = load_config(None, ["data.ratio=1000", "data.n_max=50"])
    with pytest.raises(
        ValueError,
        match=r"data\.ratio=1000\.0 with n_max=50 leaves a class with 0 training samples; "
        r"lower data\.ratio to at most 50",
    ):
        build_dataset(cfg.data)


# --- files on disk: the generic loaders (data.name=npz / csv) ------------------------------------


def _data_cfg(name, root, *extra):
    return load_config(None, [f"data.name={name}", f"data.root={root}", "data.profile=natural", *extra]).data


def _npz(path: Path, n=60, classes=3, **arrays):
    rng = np.random.default_rng(0)
    data = {"x": rng.random((n, 4)).astype(np.float32), "y": np.arange(n) % classes, **arrays}
    np.savez(path, **data)
    return path


def test_generic_data_root_missing_or_wrong(tmp_path):
    from major2minor.data.io import DataNotFoundError

    with pytest.raises(DataNotFoundError, match=r"data\.root is not set for data\.name=npz; set data\.root=DIR"):
        build_dataset(load_config(None, ["data.name=npz"]).data)
    with pytest.raises(FileNotFoundError, match=r"nope\.npz: not found; .*data\.root"):
        build_dataset(_data_cfg("npz", tmp_path / "nope.npz"))
    (tmp_path / "folder").mkdir()
    with pytest.raises(FileNotFoundError, match=r"folder/train\.csv: not found; expected a csv file of training data"):
        build_dataset(_data_cfg("csv", tmp_path / "folder"))
    assert build_dataset(_data_cfg("npz", _npz(tmp_path / "ok.npz"))).num_classes == 3


def test_cli_missing_data_root_is_one_line(tmp_path, capsys):
    assert (
        main(
            [
                "train",
                "data.name=npz",
                f"data.root={tmp_path / 'nope.npz'}",
                "train.progress=none",
                f"run.dir={tmp_path / 'run'}",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.startswith("m2m: error: ") and "nope.npz: not found" in err and "\n" not in err


@pytest.mark.parametrize("damage", ["truncate", "empty", "text"])
def test_truncated_or_malformed_npz_names_the_file(tmp_path, damage):
    from major2minor.data.io import DataFormatError

    path = _npz(tmp_path / "d.npz")
    blob = path.read_bytes()
    path.write_bytes({"truncate": blob[: len(blob) // 2], "empty": b"", "text": b"x,y\n1,2\n"}[damage])
    with pytest.raises(DataFormatError, match=r"d\.npz: not a readable \.npz archive .*np\.savez"):
        build_dataset(_data_cfg("npz", path))


def test_npz_with_wrong_contents_is_refused(tmp_path):
    from major2minor.data.io import DataFormatError

    np.savez(tmp_path / "a.npz", features=np.zeros((5, 2)), labels=np.zeros(5))
    with pytest.raises(DataFormatError, match=r"a\.npz: expected arrays 'x' and 'y', found features, labels"):
        build_dataset(_data_cfg("npz", tmp_path / "a.npz"))
    np.savez(tmp_path / "b.npz", x=np.zeros((5, 2)), y=np.zeros(4))
    with pytest.raises(DataFormatError, match=r"b\.npz: y must be one label per row of x"):
        build_dataset(_data_cfg("npz", tmp_path / "b.npz"))
    (tmp_path / "split").mkdir()
    _npz(tmp_path / "split" / "train.npz")
    _npz(tmp_path / "split" / "test.npz", n=10, classes=5)  # labels 3, 4 never trained on
    with pytest.raises(DataFormatError, match=r"test\.npz: labels \[3, 4\] do not occur in .*train\.npz"):
        build_dataset(_data_cfg("npz", tmp_path / "split"))


def test_malformed_csv_names_file_line_and_column(tmp_path):
    from major2minor.data.io import DataFormatError

    rows = ["a,b,label"] + [f"{i},{i * 2},{i % 3}" for i in range(30)]
    path = tmp_path / "t.csv"
    path.write_text("\n".join(rows + ["7,8"]) + "\n")  # truncated last line
    with pytest.raises(DataFormatError, match=r"t\.csv, line 32: 2 fields, but the header has 3"):
        build_dataset(_data_cfg("csv", path))
    path.write_text("\n".join(rows[:5] + ["1,oops,2"] + rows[5:]) + "\n")
    with pytest.raises(DataFormatError, match=r"t\.csv, line 6, column 'b': 'oops' is not a number"):
        build_dataset(_data_cfg("csv", path))
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe binary")  # not a text file at all
    with pytest.raises(DataFormatError, match=r"t\.csv"):
        build_dataset(_data_cfg("csv", path))
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(DataFormatError, match=r"data\.label_column='klass' is not a column; columns: a, b, label"):
        build_dataset(_data_cfg("csv", path, "data.label_column=klass"))


# --- files on disk: CIFAR pickles stand for every file-based data set (shared data.io errors) ----


def _cifar_set(root: Path, per_class: int = 12, bad_label: bool = False) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]:
        labels = [c for c in range(10) for _ in range(per_class)]
        if bad_label and name == "data_batch_2":
            labels[5] = 10
        data = rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8)
        with open(folder / name, "wb") as fh:
            pickle.dump({b"data": data, b"labels": labels}, fh)
    return folder


@pytest.fixture
def cifar():
    pytest.importorskip("major2minor.data.datasets.cifar")
    from major2minor.registry import DATASETS

    return lambda data_cfg: DATASETS.get("cifar10-lt")(data_cfg, 0)


def test_data_root_not_set_missing_or_wrong(tmp_path, cifar):
    from major2minor.data.io import DataNotFoundError

    cfg = load_config(None, ["data.name=cifar10-lt", "data.n_max=10", "data.ratio=2"])
    with pytest.raises(DataNotFoundError, match=r"data\.root is not set for data\.name=cifar10-lt; set data\.root=DIR"):
        cifar(cfg.data)
    cfg.data.root = str(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"nowhere: not found; .*m2m data prepare cifar10-lt"):
        cifar(cfg.data)
    (tmp_path / "empty").mkdir()
    cfg.data.root = str(tmp_path / "empty")
    with pytest.raises(
        FileNotFoundError, match=r"empty/cifar-10-batches-py: not found; expected the CIFAR python pickles"
    ):
        cifar(cfg.data)
    _cifar_set(tmp_path / "good")
    cfg.data.root = str(tmp_path / "good")
    assert cifar(cfg.data).train_counts[0] == 10


def test_truncated_or_malformed_data_file_names_the_file(tmp_path, cifar):
    from major2minor.data.io import DataFormatError

    folder = _cifar_set(tmp_path / "d")
    cfg = load_config(None, ["data.name=cifar10-lt", f"data.root={tmp_path / 'd'}", "data.n_max=10", "data.ratio=2"])
    blob = (folder / "data_batch_3").read_bytes()
    (folder / "data_batch_3").write_bytes(blob[: len(blob) // 2])  # truncated download
    with pytest.raises(DataFormatError, match=r"data_batch_3: not a readable CIFAR python pickle.*m2m data prepare"):
        cifar(cfg.data)
    (folder / "data_batch_3").write_bytes(b"<html>404 not found</html>")  # a web page saved as the file
    with pytest.raises(DataFormatError, match=r"data_batch_3: not a readable CIFAR python pickle"):
        cifar(cfg.data)
    with open(folder / "data_batch_3", "wb") as fh:
        pickle.dump({b"data": np.zeros((3, 100), np.uint8), b"labels": [0, 1, 2]}, fh)
    with pytest.raises(DataFormatError, match=r"data_batch_3: b'data' must be uint8 \(N, 3072\).*\(3, 100\)"):
        cifar(cfg.data)
    shutil.rmtree(tmp_path / "d")
    _cifar_set(tmp_path / "d", bad_label=True)
    with pytest.raises(DataFormatError, match=r"data_batch_2: labels must be in \[0, 10\), found \[0, 10\]"):
        cifar(cfg.data)


# --- M2m's generator g ----------------------------------------------------------------------------


@pytest.fixture
def erm_g(tmp_path):
    """A stand-in for g's path (each test points m2m.generator at its own checkpoint)."""
    (tmp_path / "g.pt").write_bytes(b"")
    return tmp_path / "g.pt"


def _m2m_cfg(tiny_cfg, g, *extra):
    return tiny_cfg("method=m2m", "train.epochs=2", "m2m.steps=1", f"m2m.generator={g}", *extra)


def test_generator_with_other_class_count_is_refused(tiny_cfg, tmp_path, erm_g):
    cfg = _m2m_cfg(tiny_cfg, erm_g)
    g5 = build_model(cfg, 5, (1, 8, 8))
    save_checkpoint({"model": g5.state_dict(), "num_classes": 5, "model_name": "cnn"}, tmp_path / "g5.pt")
    cfg.m2m.generator = [str(tmp_path / "g5.pt")]
    with pytest.raises(
        CheckpointError,
        match=r"m2m\.generator=.*g5\.pt: g was trained for 5 classes but this run's "
        r"data \(digits-lt\) has 10; give a g trained on this data set",
    ):
        train(cfg, log=None)
    # an official-style checkpoint ({'net': ...}) carries no class count: the shapes tell
    torch.save({"net": g5.state_dict(), "acc": 0.0, "epoch": 1}, tmp_path / "official5.t7")
    cfg.m2m.generator = [str(tmp_path / "official5.t7")]
    cfg.run.dir = str(tmp_path / "r2")
    with pytest.raises(
        CheckpointError,
        match=r"m2m\.generator=.*official5\.t7: .*'linear\.weight' has shape \(5, .*"
        r"expects \(10, .*class count or architecture differs",
    ):
        train(cfg, log=None)


def test_generator_with_other_architecture_is_refused(tiny_cfg, tmp_path, erm_g):
    cfg = _m2m_cfg(tiny_cfg, erm_g)
    mlp_cfg = load_config(None, ["model.name=mlp"])
    g = build_model(mlp_cfg, 10, (1, 8, 8))
    save_checkpoint({"model": g.state_dict(), "num_classes": 10, "model_name": "mlp"}, tmp_path / "mlp.pt")
    cfg.m2m.generator = [str(tmp_path / "mlp.pt")]
    with pytest.raises(
        CheckpointError, match=r"m2m\.generator=.*mlp\.pt: g is a 'mlp' but this run has model\.name=cnn"
    ):
        train(cfg, log=None)
    torch.save({"net": g.state_dict()}, tmp_path / "mlp.t7")  # no metadata: the keys tell
    cfg.m2m.generator = [str(tmp_path / "mlp.t7")]
    cfg.run.dir = str(tmp_path / "r2")
    with pytest.raises(
        CheckpointError, match=r"m2m\.generator=.*mlp\.t7: checkpoint .* does not fit model .*missing keys"
    ):
        train(cfg, log=None)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    cfg.m2m.generator = [str(tmp_path / "junk.pt")]
    cfg.run.dir = str(tmp_path / "r3")
    with pytest.raises(CheckpointError, match=r"junk\.pt is truncated or corrupted"):
        train(cfg, log=None)


def test_generator_trained_on_other_counts_warns(tiny_cfg, tmp_path, erm_g):
    from major2minor.methods.generator import load_generator

    cfg = _m2m_cfg(tiny_cfg, erm_g)
    bundle = build_dataset(cfg.data)
    g = build_model(cfg, bundle.num_classes, bundle.input_shape)
    save_checkpoint(
        {
            "model": g.state_dict(),
            "num_classes": 10,
            "model_name": "cnn",
            "counts": [c * 2 for c in bundle.train_counts],
        },
        tmp_path / "other_counts.pt",
    )
    with pytest.warns(
        UserWarning,
        match=r"other_counts\.pt was trained on class counts .* but this run's are .*"
        r"data\.ratio / data\.n_max",
    ):
        loaded = load_generator(tmp_path / "other_counts.pt", cfg, bundle, torch.device("cpu"), bundle.train_counts)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), g.state_dict().values()))


# ------------------------------------------------------------------------------------------------
# 2. nothing is lost on a crash


def test_failed_rename_leaves_previous_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "log.csv"
    atomic_write_text(path, "old\n")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(path, "new\n")
    with pytest.raises(OSError):
        write_csv(path, [{"epoch": 0, "loss": 1.0}])
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.csv"]  # no temporary files left


def test_failed_fsync_or_write_leaves_previous_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "summary.json"
    atomic_write_text(path, "{}\n")

    def boom(fd):
        raise OSError("I/O error")

    monkeypatch.setattr(checkpoint.os, "fsync", boom)
    with pytest.raises(OSError, match="I/O error"):
        atomic_write_text(path, '{"a": 1}\n')
    assert path.read_text() == "{}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def test_failed_checkpoint_save_keeps_last_and_prev(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"epoch": 0}, path, keep_previous=True)
    save_checkpoint({"epoch": 1}, path, keep_previous=True)
    assert load_checkpoint(path)["epoch"] == 1 and load_checkpoint(tmp_path / "last.prev.pt")["epoch"] == 0

    def torch_save_fails(obj, f, *a, **k):
        raise RuntimeError("serialisation failed")

    monkeypatch.setattr(checkpoint.torch, "save", torch_save_fails)
    with pytest.raises(RuntimeError, match="serialisation failed"):
        save_checkpoint({"epoch": 2}, path, keep_previous=True)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1 and load_checkpoint(tmp_path / "last.prev.pt")["epoch"] == 0

    # a failure after last.prev.pt was refreshed: last.pt must still exist, untouched
    real = checkpoint.atomic_write_bytes

    def write_fails(p, data):
        if Path(p).name == "last.pt":
            raise OSError("killed while writing last.pt")
        real(p, data)

    monkeypatch.setattr(checkpoint, "atomic_write_bytes", write_fails)
    with pytest.raises(OSError):
        save_checkpoint({"epoch": 2}, path, keep_previous=True)
    assert load_checkpoint(path)["epoch"] == 1
    assert load_checkpoint(tmp_path / "last.prev.pt")["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.prev.pt", "last.pt"]


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupted_checkpoint_is_detected(tmp_path, damage):
    path = tmp_path / "last.pt"
    save_checkpoint({"model": {"w": torch.ones(100)}, "epoch": 3}, path)
    blob = path.read_bytes()
    path.write_bytes({"truncate": blob[: len(blob) // 2], "garbage": os.urandom(len(blob)), "empty": b""}[damage])
    with pytest.raises(
        CheckpointError,
        match=r"last\.pt is truncated or corrupted .*delete it to start over, or "
        r"resume from .*last\.prev\.pt",
    ):
        load_checkpoint(path)


def test_resume_falls_back_to_prev_when_last_is_corrupted(tiny_cfg, tmp_path, monkeypatch):
    full = train(tiny_cfg("train.epochs=4", f"run.dir={tmp_path / 'full'}"), log=None)
    cfg, run = interrupted_run(tiny_cfg, tmp_path, monkeypatch)
    blob = (run / "last.pt").read_bytes()
    (run / "last.pt").write_bytes(blob[: len(blob) // 3])
    messages = []
    with pytest.warns(RuntimeWarning, match=r"last\.pt is unreadable .*Resuming from the previous good checkpoint"):
        resumed = train(cfg, resume=True, log=messages.append)
    assert any("WARNING" in m and "last.prev.pt" in m and "last.corrupt.pt" in m for m in messages)
    assert any("resuming" in m and "epoch 1" in m for m in messages)  # from the end of epoch 1
    assert (run / "last.corrupt.pt").read_bytes() == blob[: len(blob) // 3]  # kept, not deleted
    assert resumed["test_at_best"] == full["test_at_best"]
    assert resumed["test_at_last"] == full["test_at_last"]
    assert read_log_rows(run / "log.csv") == read_log_rows(tmp_path / "full" / "log.csv")


def test_resume_refused_when_no_good_checkpoint_is_left(tiny_cfg, tmp_path, monkeypatch):
    cfg, run = interrupted_run(tiny_cfg, tmp_path, monkeypatch)
    (run / "last.pt").write_bytes(b"")
    (run / "last.prev.pt").write_bytes(b"\x00" * 10)
    with pytest.raises(
        CheckpointError,
        match=r"cannot resume .*both last\.pt and last\.prev\.pt are unreadable.*"
        r"run\.dir=PATH",
    ):
        train(cfg, resume=True, log=None)
    (run / "last.prev.pt").unlink()
    with pytest.raises(CheckpointError, match=r"cannot resume .*There is no last\.prev\.pt to fall back on"):
        load_resume_checkpoint(run)


def test_resume_with_other_settings_is_refused(tiny_cfg, tmp_path, monkeypatch):
    cfg, run = interrupted_run(tiny_cfg, tmp_path, monkeypatch)
    before = (run / "config.yaml").read_text()
    other = tiny_cfg("train.epochs=4", f"run.dir={run}", "optim.lr=0.2", "train.progress=bar")
    with pytest.raises(
        RunDirError,
        match=r"cannot resume .* started with different settings: optim\.lr=0\.05 there, "
        r"0\.2 now\. Resume with the settings it was started with",
    ):
        train(other, resume=True, log=None)
    assert (run / "config.yaml").read_text() == before  # nothing rewritten
    ok = tiny_cfg("train.epochs=4", f"run.dir={run}", "train.progress=none", "train.threads=0")
    assert train(ok, resume=True, log=None)["best_epoch"] in range(1, 5)  # device/threads/progress are free


# ------------------------------------------------------------------------------------------------
# 4. a non-finite loss stops the run, naming epoch and batch, keeping the last good checkpoint


def test_nan_loss_stops_with_epoch_and_batch_and_keeps_checkpoint(tiny_cfg, tmp_path, monkeypatch):
    real_build = engine.build_loss
    calls = {"n": 0}
    cfg = tiny_cfg("train.epochs=4", f"run.dir={tmp_path / 'nan'}")
    n_batches = -(-len(build_dataset(cfg.data).train) // cfg.train.batch_size)

    class NaNAt(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, logits, y, w):
            calls["n"] += 1
            out = self.inner(logits, y, w)
            return out * float("nan") if calls["n"] == 2 * n_batches + 3 else out  # epoch 3, batch 3

    monkeypatch.setattr(engine, "build_loss", lambda c, counts: NaNAt(real_build(c, counts)))
    with pytest.raises(
        NonFiniteLossError,
        match=rf"non-finite loss \(nan\) at epoch 3/4, batch 3/{n_batches}; the last "
        r"good checkpoint .*last\.pt \(end of epoch 2\) is kept",
    ):
        train(cfg, log=None)
    ckpt = load_checkpoint(tmp_path / "nan" / "last.pt")
    assert ckpt["epoch"] == 1 and ckpt["state"]["epoch"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    load_weights(build_model(cfg, 10, (1, 8, 8)), tmp_path / "nan" / "last.pt")
    assert not (tmp_path / "nan" / "summary.json").exists()

    calls["n"] = 0  # the command line: one line, code 2
    assert (
        main(
            [
                "train",
                "train.epochs=4",
                "train.deferred_epoch=1",
                "optim.warmup_epochs=1",
                "optim.milestones=[2]",
                "train.progress=none",
                f"run.dir={tmp_path / 'nan_cli'}",
            ]
        )
        == 2
    )


def test_nonfinite_weights_after_last_batch_are_never_saved(tiny_cfg, tmp_path, monkeypatch):
    """A step that leaves inf weights on an epoch's last batch (loss still finite) is caught too."""
    cfg = tiny_cfg("train.epochs=4", f"run.dir={tmp_path / 'inf'}")
    n_batches = -(-len(build_dataset(cfg.data).train) // cfg.train.batch_size)
    steps = {"n": 0}

    class PoisonedSGD(torch.optim.SGD):
        def step(self, closure=None):
            out = super().step(closure)
            steps["n"] += 1
            if steps["n"] == 2 * n_batches:  # the last step of epoch 2
                with torch.no_grad():
                    self.param_groups[0]["params"][0].fill_(float("inf"))
            return out

    monkeypatch.setattr(engine.torch.optim, "SGD", PoisonedSGD)
    with pytest.raises(
        NonFiniteLossError,
        match=r"non-finite weights \(\[.*\]\) after epoch 2/4; the last good "
        r"checkpoint .*\(end of epoch 1\) is kept",
    ):
        train(cfg, log=None)
    ckpt = load_checkpoint(tmp_path / "inf" / "last.pt")
    assert ckpt["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    best = load_checkpoint(tmp_path / "inf" / "best.pt")
    assert all(torch.isfinite(v).all() for v in best["model"].values() if v.is_floating_point())


def test_huge_learning_rate_never_leaves_a_nan_model(tiny_cfg, tmp_path):
    cfg = tiny_cfg("optim.lr=1e6", "optim.warmup_epochs=0", f"run.dir={tmp_path / 'big'}")
    with pytest.raises(NonFiniteLossError, match=r"non-finite (loss|weights).* at epoch|after epoch"):
        train(cfg, log=None)
    for name in ("last.pt", "best.pt", "last.prev.pt"):
        if (tmp_path / "big" / name).exists():
            sd = load_checkpoint(tmp_path / "big" / name)["model"]
            assert all(torch.isfinite(v).all() for v in sd.values() if v.is_floating_point())


# ------------------------------------------------------------------------------------------------
# 5. an existing run directory is resumed or refused, never overwritten


def test_run_directory_states(tmp_path):
    run = tmp_path / "r"
    assert prepare_run_dir(run, resume=False) == "new"
    (run / "config.yaml").write_text("x")
    assert prepare_run_dir(run, resume=False) == "new"  # only a config: nothing to lose
    (run / "manifest.json").write_text("{}")
    with pytest.raises(RunDirError, match=r"exists and is not empty .*pass --resume .*run\.dir=PATH"):
        prepare_run_dir(run, resume=False)
    (run / "last.prev.pt").write_bytes(b"x")  # a crash between two saves
    with pytest.raises(RunDirError, match=r"holds an unfinished run .*pass --resume to continue it"):
        prepare_run_dir(run, resume=False)
    (run / ".last.pt.abc123.tmp").write_bytes(b"half a checkpoint")  # killed mid-write
    assert prepare_run_dir(run, resume=True) == "resume"
    assert not (run / ".last.pt.abc123.tmp").exists() and (run / "last.prev.pt").exists()
    (run / "summary.json").write_text("{}")
    with pytest.raises(RunDirError, match=r"already holds a finished run; pass --resume to reuse"):
        prepare_run_dir(run, resume=False)
    assert prepare_run_dir(run, resume=True) == "done"


# ------------------------------------------------------------------------------------------------
# 3. exact resume through a real SIGKILL, in the M2m phase (and 5: stdin closed, no prompt)

M2M_RUN = [
    *PINNED,
    "method=m2m",
    "train.epochs=6",
    "train.deferred_epoch=3",
    "optim.warmup_epochs=1",
    "optim.milestones=[5]",
    "train.batch_size=16",
    "m2m.steps=2",
    "m2m.beta=0.9",
    "m2m.gamma=0.1",
    "m2m.step_size=0.5",
    "train.threads=1",
    "train.device=cpu",
    "train.progress=none",
]


def _launch(args, cwd):
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "major2minor", "train", *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _rows(path: Path) -> int:
    try:
        return max(len(path.read_text().splitlines()) - 1, 0)
    except FileNotFoundError:
        return 0


def test_interrupt_mid_epoch_in_m2m_phase_resumes_exactly(tiny_cfg, tmp_path, monkeypatch):
    """The fast, in-process companion of the SIGKILL test below: die in the middle of an M2m epoch."""
    from major2minor.methods.m2m import M2mRebalancer

    g = tmp_path / "g"
    train(tiny_cfg(*PINNED, "train.epochs=3", f"run.dir={g}"), log=None)
    args = (
        *PINNED,
        "method=m2m",
        "train.epochs=5",
        "train.deferred_epoch=2",
        "m2m.steps=2",
        "m2m.beta=0.9",
        "m2m.gamma=0.1",
        "m2m.step_size=0.5",
        f"m2m.generator={g}",
    )
    full = train(tiny_cfg(*args, f"run.dir={tmp_path / 'full'}"), log=None)

    real = M2mRebalancer.transform_batch
    calls = {"n": 0}

    def dies_in_epoch_4(self, model, x, y, epoch):
        if epoch == 3:
            calls["n"] += 1
            if calls["n"] == 3:
                raise KeyboardInterrupt("simulated kill at batch 3 of epoch 4 (the 2nd M2m epoch)")
        return real(self, model, x, y, epoch)

    monkeypatch.setattr(M2mRebalancer, "transform_batch", dies_in_epoch_4)
    cfg = tiny_cfg(*args, f"run.dir={tmp_path / 'cut'}")
    with pytest.raises(KeyboardInterrupt):
        train(cfg, log=None)
    monkeypatch.setattr(M2mRebalancer, "transform_batch", real)
    assert load_checkpoint(tmp_path / "cut" / "last.pt")["state"]["epoch"] == 3
    resumed = train(cfg, resume=True, log=None)
    for key in ("test_at_best", "test_at_last", "val_at_best", "best_epoch"):
        assert resumed[key] == full[key], key
    rows = read_log_rows(tmp_path / "full" / "log.csv")
    assert read_log_rows(tmp_path / "cut" / "log.csv") == rows
    assert sum(int(r["m2m_accepted"]) for r in rows[2:]) > 0, "no translated sample was accepted"


# Four processes, ~20 s of CPU, 14-16 s wall on 2 cores (longer on a busy machine); the in-process interruption
# above keeps the M2m-phase resume in the fast suite.
@pytest.mark.slow  # SIGKILL of a training process, then resume
def test_sigkill_in_m2m_phase_then_resume_matches_uninterrupted_run(tmp_path):
    g = tmp_path / "g"
    train(
        load_config(None, [*PINNED, "train.epochs=4", "optim.warmup_epochs=1", "train.progress=none", f"run.dir={g}"]),
        log=None,
    )
    common = [*M2M_RUN, f"m2m.generator={g}"]
    ref = _launch([*common, f"run.dir={tmp_path / 'ref'}"], tmp_path)
    cut_dir = tmp_path / "cut"
    cut = _launch([*common, f"run.dir={cut_dir}"], tmp_path)

    procs = [ref, cut]
    try:
        deadline = time.time() + 300
        while _rows(cut_dir / "log.csv") < 4:  # epochs 0-2 ERM, epoch 3 is the first M2m one
            assert cut.poll() is None, f"the run ended before it could be killed: {cut.communicate()}"
            assert time.time() < deadline, "no progress within 300 s"
            time.sleep(0.01)
        time.sleep(0.1)  # into the next (M2m) epoch
        os.kill(cut.pid, signal.SIGKILL)
        cut.wait(30)
        assert cut.returncode == -signal.SIGKILL
        assert not (cut_dir / "summary.json").exists(), "killed too late: the run had finished"
        killed_at = _rows(cut_dir / "log.csv")
        assert 4 <= killed_at < 6

        # without --resume the directory is refused (one line, exit code 2), never overwritten or prompted for
        again = _launch([*common, f"run.dir={cut_dir}"], tmp_path)
        procs.append(again)
        out, err = again.communicate(timeout=120)
        assert again.returncode == 2 and "holds an unfinished run" in err and "--resume" in err
        assert _rows(cut_dir / "log.csv") == killed_at

        resumed = _launch([*common, f"run.dir={cut_dir}", "--resume"], tmp_path)
        procs.append(resumed)
        out, err = resumed.communicate(timeout=300)
        assert resumed.returncode == 0, err
        assert "resuming" in out
        ref_out, ref_err = ref.communicate(timeout=300)
        assert ref.returncode == 0, ref_err

    finally:
        for p in procs:  # never leave a run behind
            if p.poll() is None:
                p.kill()
            p.communicate()

    s_ref = json.loads((tmp_path / "ref" / "summary.json").read_text())
    s_cut = json.loads((cut_dir / "summary.json").read_text())
    for key in ("test_at_best", "test_at_last", "val_at_best", "best_epoch", "train_counts", "m2m"):
        if key == "m2m":
            s_ref[key].pop("translation_seconds"), s_cut[key].pop("translation_seconds")
        assert s_cut[key] == s_ref[key], key
    rows_ref, rows_cut = read_log_rows(tmp_path / "ref" / "log.csv"), read_log_rows(cut_dir / "log.csv")
    assert len(rows_ref) == 6 and rows_cut == rows_ref
    assert all(r["m2m_slots"] for r in rows_ref[3:]) and not any(r["m2m_slots"] for r in rows_ref[:3])
    assert sum(int(r["m2m_accepted"]) for r in rows_ref[3:]) > 0, "no translated sample was accepted"
    w_ref = load_checkpoint(tmp_path / "ref" / "last.pt")["model"]
    w_cut = load_checkpoint(cut_dir / "last.pt")["model"]
    assert all(torch.equal(w_ref[k], w_cut[k]) for k in w_ref)
