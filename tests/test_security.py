"""Security hardening: reading a checkpoint or a CIFAR pickle never runs code; checkpoints carry a checksum.

Marker-file tests: each hostile file would create a marker file when unpickled the ordinary way (``open``,
``os.system`` or ``eval``; a control test shows that it does).  Every loader must refuse it with a clear
error naming the file, and the marker must not exist afterwards.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import shlex
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import crash_at_epoch, interrupted_run, read_log_rows

import major2minor.checkpoint as checkpoint
from major2minor.atomic import atomic_write_text
from major2minor.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_resume_checkpoint,
    load_weights,
    save_checkpoint,
)
from major2minor.cli import main
from major2minor.config import load_config
from major2minor.data.io import DataFormatError
from major2minor.models import build_model
from major2minor.pipeline import train
from major2minor.rundir import RunDir

# --- hostile payloads -----------------------------------------------------------------------------


class OpensMarker:
    """Unpickled the ordinary way, this creates ``path`` (``open(path, 'w')``)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


class TouchesMarker(OpensMarker):
    """Unpickled the ordinary way, this runs a shell command (``os.system('touch path')``)."""

    def __reduce__(self):
        return (os.system, ("touch " + shlex.quote(self.path),))


class EvalsMarker(OpensMarker):
    """Unpickled the ordinary way, this evaluates Python source (``eval(...)``)."""

    def __reduce__(self):
        return (eval, (f"open({self.path!r}, 'w').close()",))


PAYLOADS = {
    "open": (OpensMarker, "io.open"),
    "os.system": (TouchesMarker, f"{os.system.__module__}.system"),
    "eval": (EvalsMarker, "builtins.eval"),
}


@pytest.fixture(autouse=True)
def _no_figures(monkeypatch):
    monkeypatch.setattr(RunDir, "write_figures", lambda *a, **k: [])


def _write_checkpoint(path: Path, obj, fmt: str) -> Path:
    """``obj`` as ``torch.save`` writes it today (zip), as torch < 1.6 did (legacy), or as a bare pickle."""
    if fmt == "zip":
        torch.save(obj, path)
    elif fmt == "legacy":
        torch.save(obj, path, _use_new_zipfile_serialization=False)
    else:
        with open(path, "wb") as fh:
            pickle.dump(obj, fh, protocol=2)
    return path


def _official(net, **extra):
    """The layout of the authors' M2m checkpoints (``ckpt.t7``)."""
    return {
        "net": net.state_dict(),
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0, 1]}]},
        "acc": 83.5,
        "epoch": 199,
        "rng_state": torch.get_rng_state(),
        **extra,
    }


def _resnet32(num_classes=10, in_ch=3):
    return build_model(load_config(None, ["model.name=resnet32"]), num_classes, (in_ch, 32, 32))


REFUSED = (
    r"was refused: it contains Python objects other than tensors and plain containers \(it references {name}\), "
    r"so it was not loaded, because loading it could run code\. .*re-save only the weights with "
    r"torch\.save\(\{{'net': model\.state_dict\(\)\}}, path\)"
)


# ------------------------------------------------------------------------------------------------
# 1. checkpoints: load_checkpoint / load_weights / resume / M2m's generator never run code


@pytest.mark.parametrize("fmt", ["zip", "legacy", "bare-pickle"])
@pytest.mark.parametrize("payload", sorted(PAYLOADS))
def test_checkpoint_that_would_run_code_is_refused(tmp_path, payload, fmt):
    cls, name = PAYLOADS[payload]
    marker = tmp_path / "marker"
    weights = {"w": [1.0, 2.0]} if fmt == "bare-pickle" else {"w": torch.ones(3)}  # plain pickle cannot hold tensors
    path = _write_checkpoint(tmp_path / "evil.pt", {"model": weights, "epoch": 1, "x": cls(marker)}, fmt)
    with pytest.raises(CheckpointError, match=re.escape(str(path)) + " " + REFUSED.format(name=re.escape(name))) as err:
        load_checkpoint(path)
    assert "\n" not in str(err.value)
    assert "weights_only" not in str(err.value)  # an error never advises loading a refused file unsafely
    with pytest.raises(CheckpointError, match="refused"):
        load_weights(torch.nn.Linear(3, 1), path)
    assert not marker.exists()
    # control: the ordinary unpickler does run it, so the assertion above means something
    if fmt == "bare-pickle":
        with open(path, "rb") as fh:
            pickle.load(fh)
    else:
        torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_official_layout_that_would_run_code_is_refused(tmp_path, fmt):
    marker = tmp_path / "marker"
    net = _resnet32()
    path = _write_checkpoint(tmp_path / "ckpt.t7", _official(net, acc=TouchesMarker(marker)), fmt)
    with pytest.raises(CheckpointError, match=r"ckpt\.t7 was refused: it contains Python objects"):
        load_weights(_resnet32(), path)
    assert not marker.exists()


def _resume_ckpt(epoch=0):
    return {
        "model": {"w": torch.ones(2)},
        "optimizer": {},
        "state": {"history": [{"loss": 1.0, "x": None}]},
        "rng": {"sample": torch.Generator().get_state()},
        "epoch": epoch,
    }


def test_resume_refuses_a_last_pt_that_would_run_code_and_falls_back(tmp_path):
    marker = tmp_path / "marker"
    run = tmp_path / "run"
    run.mkdir()
    save_checkpoint(_resume_ckpt(0), run / "last.prev.pt")
    torch.save({**_resume_ckpt(1), "x": TouchesMarker(marker)}, run / "last.pt")
    messages = []
    with pytest.warns(
        RuntimeWarning,
        match=r"last\.pt is unreadable \(refused: it contains Python objects .*"
        r"Resuming from the previous good checkpoint .*last\.prev\.pt",
    ):
        obj, used = load_resume_checkpoint(run, messages.append)
    assert used == run / "last.prev.pt" and obj["epoch"] == 0
    assert any("moved to" in m and "last.corrupt.pt" in m for m in messages)
    assert (run / "last.corrupt.pt").exists() and not marker.exists()

    torch.save({**_resume_ckpt(1), "x": OpensMarker(marker)}, run / "last.pt")
    torch.save({**_resume_ckpt(0), "x": OpensMarker(marker)}, run / "last.prev.pt")
    with pytest.raises(
        CheckpointError,
        match=r"cannot resume .*both last\.pt and last\.prev\.pt are unreadable "
        r"\(last\.pt: refused: .*io\.open.*; "
        r"last\.prev\.pt: refused: .*io\.open",
    ):
        load_resume_checkpoint(run)
    assert not marker.exists()


def test_generator_checkpoint_that_would_run_code_is_refused(tiny_cfg, tmp_path):
    from major2minor.data import build_dataset
    from major2minor.methods.generator import load_generator

    marker = tmp_path / "marker"
    cfg = tiny_cfg("model.name=cnn", "method=m2m", "train.epochs=2", "m2m.steps=1")
    bundle = build_dataset(cfg.data)
    g = build_model(cfg, bundle.num_classes, bundle.input_shape)
    ours = tmp_path / "g.pt"
    torch.save({"model": g.state_dict(), "num_classes": 10, "model_name": "cnn", "x": OpensMarker(marker)}, ours)
    official = tmp_path / "g.t7"
    torch.save({"net": g.state_dict(), "acc": EvalsMarker(marker), "epoch": 3}, official)
    run_dir = tmp_path / "gdir"
    run_dir.mkdir()
    torch.save({"model": g.state_dict(), "x": TouchesMarker(marker)}, run_dir / "best.pt")
    for path, what in ((ours, "io.open"), (official, "builtins.eval"), (run_dir, "system")):
        with pytest.raises(CheckpointError, match=r"(g\.pt|g\.t7|best\.pt) was refused: .*" + what):
            load_generator(path, cfg, bundle, torch.device("cpu"), bundle.train_counts)
    # and through a whole run
    cfg.m2m.generator = [str(official)]
    cfg.run.dir = str(tmp_path / "run")
    with pytest.raises(CheckpointError, match=r"g\.t7 was refused"):
        train(cfg, log=None)
    assert not marker.exists()


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_official_m2m_checkpoint_loads_with_weights_only(tmp_path, fmt):
    """The authors' layout, written both ways torch has written it, loads unverified (it has no checksum)."""
    net = _resnet32()
    path = _write_checkpoint(tmp_path / "ckpt.t7", _official(net), fmt)
    model = _resnet32()
    obj = load_weights(model, path)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in net.state_dict().items())
    assert "conv_1_3x3.weight" in obj["net"] and "stage_1.0.conv_a.weight" in obj["net"]
    assert obj["acc"] == 83.5 and obj["epoch"] == 199 and obj["rng_state"].dtype == torch.uint8
    assert obj["optimizer"]["param_groups"][0]["lr"] == 0.1
    # a DataParallel copy ('module.' prefix) too
    torch.save({"net": {"module." + k: v for k, v in net.state_dict().items()}, "acc": 1.0}, tmp_path / "dp.t7")
    load_weights(_resnet32(), tmp_path / "dp.t7")


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_truncated_official_checkpoint_is_corrupted_not_refused(tmp_path, fmt):
    """A cut-off file is reported as damaged, never as a refusal (a legacy file cut inside a GLOBAL name
    makes torch report a refused global with half a name)."""
    blob = _write_checkpoint(tmp_path / "full.t7", _official(_resnet32()), fmt).read_bytes()
    path = tmp_path / "ckpt.t7"
    cuts = [*range(1, 1500, 7), 2000, 5000, len(blob) // 2, len(blob) - 1]
    for n in cuts:
        path.write_bytes(blob[:n])
        with pytest.raises(CheckpointError, match=r"ckpt\.t7 is truncated or corrupted \(.*delete it") as err:
            load_checkpoint(path)
        assert "refused" not in str(err.value) and "\n" not in str(err.value), n


@pytest.mark.filterwarnings("ignore:Detected pickle protocol 4")
def test_checkpoint_pickled_with_protocol_4_is_refused_as_such(tmp_path):
    """torch's safe loader does not read protocol 4; that is said as such, not as damage."""
    torch.save({"net": {"w": torch.ones(2)}}, tmp_path / "p4.pt", pickle_protocol=4)
    with pytest.raises(
        CheckpointError,
        match=r"p4\.pt was refused: it was pickled with opcode FRAME \(pickle "
        r"protocol 4 or later\), which the loader that cannot run code",
    ):
        load_checkpoint(tmp_path / "p4.pt")


def test_save_refuses_state_that_could_not_be_loaded_back(tmp_path):
    with pytest.raises(
        CheckpointError,
        match=r"not writing checkpoint .*x\.pt: its state holds Python objects "
        r"\(numpy\.[\w.]+.*store them as tensors or plain Python types",
    ):
        save_checkpoint({"acc": np.float64(0.5)}, tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()


# ------------------------------------------------------------------------------------------------
# 2. our own training checkpoints hold only what weights_only admits, and resume exactly


M2M_SELF = (
    "model.name=cnn",
    "model.width=32",
    "optim.lr=0.1",
    "method=m2m",
    "m2m.self_generator=true",
    "m2m.steps=1",
    "train.epochs=3",
)


def test_own_training_checkpoint_loads_with_weights_only_and_resumes(tiny_cfg, tmp_path, monkeypatch):
    full = train(tiny_cfg(*M2M_SELF, f"run.dir={tmp_path / 'full'}"), log=None)
    real = crash_at_epoch(monkeypatch, 3)
    cfg = tiny_cfg(*M2M_SELF, f"run.dir={tmp_path / 'cut'}")
    with pytest.raises(KeyboardInterrupt):
        train(cfg, log=None)
    monkeypatch.setattr(RunDir, "write_log", real)
    for name in ("last.pt", "last.prev.pt", "best.pt"):
        path = tmp_path / "cut" / name
        assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == [], name
        ckpt = torch.load(path, weights_only=True)  # plain torch reads it too
        assert ckpt["rng"]["sample"].dtype == torch.uint8 and ckpt["config"]["method"].startswith("m2m")
    ckpt = load_checkpoint(tmp_path / "cut" / "last.pt")
    assert ckpt["epoch"] == 1 and ckpt["rebalancer"]["rng"].dtype == torch.uint8
    resumed = train(cfg, resume=True, log=None)
    for key in ("test_at_best", "test_at_last", "val_at_best", "best_epoch"):
        assert resumed[key] == full[key], key
    assert read_log_rows(tmp_path / "cut" / "log.csv") == read_log_rows(tmp_path / "full" / "log.csv")


# ------------------------------------------------------------------------------------------------
# 3. integrity: every checkpoint carries the SHA-256 of its bytes

TAG = b"major2minor-sha256:"


def _flip(path: Path, at: int) -> bytes:
    blob = bytearray(path.read_bytes())
    blob[at] ^= 0x01
    path.write_bytes(bytes(blob))
    return bytes(blob)


def test_checkpoint_carries_its_checksum_and_stays_a_plain_torch_file(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint({"model": {"w": torch.arange(5.0)}, "epoch": 3}, path)
    blob = path.read_bytes()
    assert blob[-83:-64] == TAG and hashlib.sha256(blob[:-83]).hexdigest().encode() == blob[-64:]
    with zipfile.ZipFile(path) as zf:  # a valid zip: the checksum is its comment
        assert zf.testzip() is None and zf.comment == blob[-83:]
    assert torch.equal(torch.load(path, weights_only=True)["model"]["w"], torch.arange(5.0))
    assert load_checkpoint(path)["epoch"] == 3


@pytest.mark.parametrize("where", ["middle", "start", "zip end record", "checksum"])
def test_same_length_bit_flip_is_detected(tmp_path, where):
    path = tmp_path / "last.pt"
    save_checkpoint({"model": {"w": torch.ones(1000)}, "epoch": 3}, path)
    n = path.stat().st_size
    _flip(path, {"middle": n // 2, "start": 40, "zip end record": n - 83 - 10, "checksum": n - 1}[where])
    assert path.stat().st_size == n
    with pytest.raises(
        CheckpointError,
        match=r"last\.pt: checksum mismatch: the file was modified or corrupted after "
        r"it was written; delete it to start over, or resume from .*last\.prev",
    ):
        load_checkpoint(path)


def test_files_without_checksum_still_load(tmp_path):
    torch.save({"model": {"w": torch.ones(3)}, "epoch": 2}, tmp_path / "old.pt")  # an older run, another tool
    assert load_checkpoint(tmp_path / "old.pt")["epoch"] == 2


def test_a_crash_at_any_point_of_a_save_leaves_verified_checkpoints(tmp_path, monkeypatch):
    """Kill the save at each file-system step in turn: last.pt and last.prev.pt always load, checksums
    included, holding the old or the new state (there is no side file to fall out of step)."""
    real = {name: getattr(os, name) for name in ("link", "replace", "fsync")}
    step = 0
    while True:
        run = tmp_path / f"r{step}"
        save_checkpoint({"epoch": 0, "w": torch.zeros(50)}, run / "last.pt", keep_previous=True)
        save_checkpoint({"epoch": 1, "w": torch.ones(50)}, run / "last.pt", keep_previous=True)
        calls = {"n": 0}

        def dies(name, calls=calls, step=step):
            def f(*a, **k):
                calls["n"] += 1
                if calls["n"] == step + 1:
                    raise KeyboardInterrupt(f"killed at step {step} ({name})")
                return real[name](*a, **k)

            return f

        for name in real:
            monkeypatch.setattr(checkpoint.os, name, dies(name))
        try:
            save_checkpoint({"epoch": 2, "w": torch.full((50,), 2.0)}, run / "last.pt", keep_previous=True)
            finished = True
        except KeyboardInterrupt:
            finished = False
        monkeypatch.undo()
        last, prev = load_checkpoint(run / "last.pt"), load_checkpoint(run / "last.prev.pt")
        assert (last["epoch"], prev["epoch"]) in ((1, 0), (1, 1), (2, 1)), step
        if finished:
            assert (last["epoch"], prev["epoch"]) == (2, 1)
            break
        step += 1
    assert step >= 3


def test_bit_flipped_last_pt_resumes_from_prev_with_the_same_result(tiny_cfg, tmp_path, monkeypatch):
    full = train(tiny_cfg("train.epochs=4", f"run.dir={tmp_path / 'full'}"), log=None)
    cfg, run = interrupted_run(tiny_cfg, tmp_path, monkeypatch)
    size = (run / "last.pt").stat().st_size
    flipped = _flip(run / "last.pt", size // 2)
    messages = []
    with pytest.warns(
        RuntimeWarning,
        match=r"last\.pt is unreadable \(checksum mismatch: the file was modified or "
        r"corrupted after it was written\)\. Resuming from the previous good "
        r"checkpoint .*last\.prev\.pt \(end of epoch 1\)",
    ):
        resumed = train(cfg, resume=True, log=messages.append)
    assert any("WARNING" in m and "checksum mismatch" in m and "last.corrupt.pt" in m for m in messages)
    assert (run / "last.corrupt.pt").read_bytes() == flipped  # kept, not deleted
    for key in ("test_at_best", "test_at_last", "val_at_best", "best_epoch"):
        assert resumed[key] == full[key], key
    assert read_log_rows(run / "log.csv") == read_log_rows(tmp_path / "full" / "log.csv")


def test_bit_flips_in_last_and_prev_are_refused_clearly(tiny_cfg, tmp_path, monkeypatch):
    cfg, run = interrupted_run(tiny_cfg, tmp_path, monkeypatch)
    for name in ("last.pt", "last.prev.pt"):
        _flip(run / name, (run / name).stat().st_size // 2)
    with pytest.raises(CheckpointError) as err:
        train(cfg, resume=True, log=None)
    msg = str(err.value)
    assert re.search(
        r"cannot resume .*: both last\.pt and last\.prev\.pt are unreadable \(last\.pt: checksum "
        r"mismatch: the file was modified or corrupted after it was written; "
        r"last\.prev\.pt: checksum mismatch: .*"
        r"\); start over in a new directory \(run\.dir=PATH\) or remove this one\.$",
        msg,
    ), msg
    assert "prev.prev" not in msg and "\n" not in msg


# ------------------------------------------------------------------------------------------------
# 4. the fallback says what happened; no nonexistent file is named; files get the umask's mode


def test_fallback_when_last_pt_is_absent_says_so(tmp_path):
    run = tmp_path / "run"
    save_checkpoint(_resume_ckpt(4), run / "last.prev.pt")
    messages = []
    with pytest.warns(
        RuntimeWarning,
        match=r"last\.pt does not exist\. Resuming from the previous good checkpoint "
        r".*last\.prev\.pt \(end of epoch 5\).*Nothing was moved aside",
    ):
        obj, used = load_resume_checkpoint(run, messages.append)
    assert obj["epoch"] == 4 and used.name == "last.prev.pt"
    assert not any("was moved to" in m for m in messages)
    assert not (run / "last.corrupt.pt").exists()


def test_unreadable_prev_names_no_nonexistent_file(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pt").write_bytes(b"")
    (run / "last.prev.pt").write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError) as err:
        load_resume_checkpoint(run)
    assert (
        "both last.pt and last.prev.pt are unreadable (last.pt: truncated or corrupted (the file is empty); "
        "last.prev.pt: truncated or corrupted" in str(err.value)
    )
    with pytest.raises(CheckpointError) as err_prev:
        load_checkpoint(run / "last.prev.pt")
    for e in (err, err_prev):
        assert "prev.prev" not in str(e.value)
        named = re.findall(r"[\w./-]+\.pt\b", str(e.value))
        assert named and all((run / p).exists() for p in named), named  # absolute paths or names in run


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_get_the_mode_the_umask_implies(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "summary.json", "{}\n")
        save_checkpoint({"epoch": 0}, tmp_path / "last.pt", keep_previous=True)
        save_checkpoint({"epoch": 1}, tmp_path / "last.pt", keep_previous=True)
    finally:
        os.umask(old)
    for name in ("summary.json", "last.pt", "last.prev.pt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode, name


# ------------------------------------------------------------------------------------------------
# 5. CIFAR pickles: only numpy arrays, dicts, lists, strings, bytes and numbers are rebuilt


def _cifar_files(root: Path, per_class: int = 12) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]:
        labels = [c for c in range(10) for _ in range(per_class)]
        with open(folder / name, "wb") as fh:
            pickle.dump({b"data": rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8), b"labels": labels}, fh)
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, fh)
    return folder


def _cifar_cfg(root: Path):
    return load_config(None, ["data.name=cifar10-lt", f"data.root={root}", "data.n_max=10", "data.ratio=2"]).data


def _build(root: Path):
    from major2minor.data import build_dataset

    return build_dataset(_cifar_cfg(root))


def _hostile(marker: Path, where: str, cls):
    if where == "labels":
        return {b"data": np.zeros((1, 3072), np.uint8), b"labels": [cls(marker)]}
    if where == "object array":  # hidden inside a numpy array of Python objects
        arr = np.empty(1, dtype=object)
        arr[0] = cls(marker)
        return {b"data": arr, b"labels": [0]}
    return cls(marker)  # the whole file


@pytest.mark.parametrize("protocol", [2, pickle.DEFAULT_PROTOCOL])
@pytest.mark.parametrize("where", ["labels", "object array", "whole file"])
@pytest.mark.parametrize("payload", sorted(PAYLOADS))
def test_cifar_pickle_that_would_run_code_is_refused(tmp_path, payload, where, protocol):
    cls, name = PAYLOADS[payload]
    marker = tmp_path / "marker"
    folder = _cifar_files(tmp_path / "d")
    with open(folder / "data_batch_1", "wb") as fh:
        pickle.dump(_hostile(marker, where, cls), fh, protocol=protocol)
    with pytest.raises(DataFormatError) as err:
        _build(tmp_path / "d")
    msg = str(err.value)
    assert msg.startswith(
        f"refusing to load {folder / 'data_batch_1'}: it references the Python global {name}, "
        "which a CIFAR pickle never contains; loading it could run code. Re-download the official "
        "archive"
    ), msg
    assert "m2m data prepare cifar10-lt" in msg and "\n" not in msg
    assert not marker.exists()
    with open(folder / "data_batch_1", "rb") as fh:  # control: pickle.load runs it
        try:
            pickle.load(fh, encoding="bytes")
        except Exception:  # noqa: BLE001 - the object array's state may not unpickle cleanly; the call ran
            pass
    assert marker.exists()


def test_cifar_meta_file_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "marker"
    folder = _cifar_files(tmp_path / "d")
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": [TouchesMarker(marker)] * 10}, fh)
    with pytest.raises(DataFormatError, match=r"refusing to load .*batches\.meta: it references the Python global"):
        _build(tmp_path / "d")
    assert not marker.exists()


@pytest.mark.parametrize("argv", [["data", "info", "cifar10-lt"], ["data", "prepare", "cifar10-lt", "--no-verify"]])
def test_cifar_commands_refuse_pickles_that_would_run_code(tmp_path, capsys, argv):
    marker = tmp_path / "marker"
    folder = _cifar_files(tmp_path / "d")
    with open(folder / "test_batch", "wb") as fh:
        pickle.dump({b"data": np.zeros((1, 3072), np.uint8), b"labels": [OpensMarker(marker)]}, fh)
    code = main([*argv, "--root", str(tmp_path / "d"), "n_max=10", "ratio=2"])
    err = capsys.readouterr().err
    assert code == 2 and "refusing to load" in err and "test_batch" in err and "io.open" in err, err
    assert not marker.exists()


@pytest.mark.slow  # m2m in a subprocess; the in-process commands are checked above
def test_cifar_train_command_refuses_pickles_that_would_run_code(tmp_path):
    """``m2m train cifar10-lt``, the real command line in a subprocess."""
    marker = tmp_path / "marker"
    folder = _cifar_files(tmp_path / "d")
    with open(folder / "data_batch_2", "wb") as fh:
        pickle.dump({b"data": np.zeros((1, 3072), np.uint8), b"labels": [TouchesMarker(marker)]}, fh)
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "major2minor",
            "train",
            "data.name=cifar10-lt",
            f"data.root={tmp_path / 'd'}",
            "data.n_max=10",
            "data.ratio=2",
            "train.epochs=1",
            f"run.dir={tmp_path / 'run'}",
            "train.progress=none",
        ],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode != 0 and "refusing to load" in proc.stderr and "data_batch_2" in proc.stderr, proc.stderr
    assert not marker.exists()


def _python2_pickle(data: np.ndarray, labels) -> bytes:
    """What Python 2's ``cPickle.dump(d, f, 2)`` wrote for the official files: str (here bytes) keys, numpy 1's
    ``numpy.core.multiarray._reconstruct``, the array's bytes as a py2 str (BINSTRING), labels as a list."""

    def s(b):
        return b"U" + bytes([len(b)]) + b

    raw = data.tobytes()
    out = b"\x80\x02}q\x00(" + s(b"data")
    out += b"cnumpy.core.multiarray\n_reconstruct\nq\x01cnumpy\nndarray\nq\x02K\x00\x85" + s(b"b") + b"\x87Rq\x03("
    out += b"K\x01M" + struct.pack("<H", data.shape[0]) + b"M" + struct.pack("<H", data.shape[1]) + b"\x86"
    out += (
        b"cnumpy\ndtype\nq\x04"
        + s(b"u1")
        + b"K\x00K\x01\x87Rq\x05(K\x03"
        + s(b"|")
        + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tq\x06b"
    )
    out += b"\x89T" + struct.pack("<I", len(raw)) + raw + b"tq\x07b"
    out += s(b"labels") + b"]q\x08(" + b"".join(b"K" + bytes([v]) for v in labels) + b"eu."
    return out


def test_cifar_python2_pickles_load(tmp_path):
    from major2minor.data.datasets.cifar import CIFAR10, read_batch

    rng = np.random.default_rng(1)
    data = rng.integers(0, 256, (20, 3072), dtype=np.uint8)
    labels = [i % 10 for i in range(20)]
    blob = _python2_pickle(data, labels)
    assert pickle.loads(blob, encoding="bytes")[b"labels"] == labels  # the helper writes a valid pickle
    (tmp_path / "data_batch_1").write_bytes(blob)
    x, y = read_batch(tmp_path / "data_batch_1", CIFAR10)
    assert np.array_equal(x, data.reshape(-1, 3, 32, 32)) and y.tolist() == labels


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
@pytest.mark.parametrize("labels_as", ["list", "array"])
@pytest.mark.parametrize("keys", ["bytes", "str"])
def test_cifar_pickles_of_every_protocol_load(tmp_path, protocol, labels_as, keys):
    from major2minor.data.datasets.cifar import CIFAR10, read_batch

    data = np.arange(4 * 3072, dtype=np.int64).astype(np.uint8).reshape(4, 3072)
    labels = [3, 1, 4, 1]
    k = (lambda s: s.encode()) if keys == "bytes" else (lambda s: s)
    with open(tmp_path / "b", "wb") as fh:
        pickle.dump(
            {
                k("data"): data,
                k("labels"): labels if labels_as == "list" else np.array(labels),
                k("batch_label"): "training batch 1 of 5",
                k("filenames"): [b"a.png", "b.png"],
            },
            fh,
            protocol=protocol,
        )
    x, y = read_batch(tmp_path / "b", CIFAR10)
    assert np.array_equal(x, data.reshape(-1, 3, 32, 32)) and y.tolist() == labels


def test_cifar_codecs_encode_is_only_admitted_for_latin1(tmp_path):
    """Protocol 2 writes bytes as ``_codecs.encode(text, 'latin1')``; any other codec is refused."""
    from major2minor.data.datasets.cifar import CIFAR10, read_pickle

    blob = pickle.dumps({b"data": b"\xff"}, protocol=2)
    assert b"latin1" in blob
    (tmp_path / "ok").write_bytes(blob)
    assert read_pickle(tmp_path / "ok", CIFAR10)[b"data"] == b"\xff"
    (tmp_path / "bad").write_bytes(blob.replace(b"latin1", b"rot_13"))
    with pytest.raises(DataFormatError, match=r"bad: not a readable CIFAR python pickle"):
        read_pickle(tmp_path / "bad", CIFAR10)


PREPARE = Path("/work/shared/data/cifar10-images/prepare.py")


@pytest.fixture(scope="module")
def real_cifar(tmp_path_factory):
    """The real CIFAR-10 images, written as the standard python pickles by the shared prepare script."""
    if not PREPARE.exists() or shutil.which("python3") is None:
        pytest.skip(f"{PREPARE} is not here")
    out = tmp_path_factory.mktemp("cifar_real")
    subprocess.run([sys.executable, str(PREPARE), str(out)], check=True, capture_output=True, timeout=600)
    return out


@pytest.mark.slow  # the shared prepare script in a subprocess, then all 60,000 images
def test_real_cifar10_pickles_load_through_the_safe_reader(real_cifar):
    from major2minor.data import build_dataset
    from major2minor.data.datasets.cifar import CIFAR10, load_arrays

    x, y, xt, yt, names = load_arrays(real_cifar, CIFAR10)
    assert x.shape == (50000, 3, 32, 32) and x.dtype == np.uint8 and xt.shape == (10000, 3, 32, 32)
    assert np.bincount(y).tolist() == [5000] * 10 and np.bincount(yt).tolist() == [1000] * 10
    assert names[:3] == ["airplane", "automobile", "bird"] and names[-1] == "truck"
    with open(real_cifar / "cifar-10-batches-py" / "data_batch_1", "rb") as fh:  # our own file: trusted
        d = pickle.load(fh)
    assert np.array_equal(d["data"].reshape(-1, 3, 32, 32), x[:10000]) and d["labels"] == y[:10000].tolist()
    bundle = build_dataset(
        load_config(None, ["data.name=cifar10-lt", f"data.root={real_cifar}", "data.n_max=5000", "data.ratio=100"]).data
    )
    assert bundle.train_counts[0] == 5000 and bundle.train_counts[-1] == 50


# ------------------------------------------------------------------------------------------------
# 5. links planted in a run, cache, prefix or tune directory are never written (or read) through

_FAST = ["train.progress=none", "train.threads=1", "optim.milestones=[1]", "train.deferred_epoch=1", "train.epochs=2"]


def _precious(tmp_path: Path, name: str = "precious.txt") -> Path:
    """A file outside every run root that a planted link points at; its content must survive."""
    outside = tmp_path / "outside"
    outside.mkdir(exist_ok=True)
    marker = outside / name
    marker.write_text(f"KEEP {name}\n")
    return marker


def _locked_dir_and_command(kind: str, root: Path):
    """(the directory a RunLock guards, the m2m command that takes that lock first) for each kind of directory."""
    from major2minor.pipeline import generator_config
    from major2minor.prefix import prefix_config

    if kind == "run":
        return root / "r", ["train", *_FAST, f"run.dir={root / 'r'}"]
    if kind == "cache":  # M2m's cached ERM generator g
        overrides = ["method=m2m", *_FAST, f"run.root={root}"]
        return Path(generator_config(load_config("digits-lt", overrides)).run.dir), ["train", *overrides]
    if kind == "prefix":  # the shared first T0 epochs of m2m reproduce
        cfg = load_config("digits-lt", ["method=drw", *_FAST, f"run.root={root}"])
        command = ["reproduce", "--recipe", "digits-lt", "--methods", "drw", "--seeds", "1", "--root", str(root)]
        return Path(prefix_config(cfg).run.dir), [*command, *_FAST]
    common = ["--method", "erm", "optim.lr=0.01:0.2", "--trials", "1", "--seeds", "1", "--root", str(root)]
    return root / "tune" / "digits-lt-erm", ["tune", "digits-lt", *common, *_FAST]


@pytest.mark.parametrize("name", [".lock.owner", ".lock"])
@pytest.mark.parametrize("kind", ["run", "cache", "prefix", "tune"])
def test_a_lock_file_planted_as_a_link_is_refused_and_its_target_kept(tmp_path, capsys, kind, name):
    """Issue 22 item 6: `.lock.owner` was written with write_text, through a planted link, overwriting the file
    it points to with the lock's JSON.  The link is refused (naming it); the file outside is untouched."""
    if kind != "run" and name == ".lock":
        pytest.skip("the .lock link is the same check; one kind of directory shows it")
    marker = _precious(tmp_path)
    folder, argv = _locked_dir_and_command(kind, tmp_path / "runs")
    folder.mkdir(parents=True)
    (folder / name).symlink_to(marker)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{folder / name} is a symbolic link (to {marker}) where the run directory's lock file should be" in err
    assert "never follows a link there" in err and "Traceback" not in err
    assert marker.read_text() == "KEEP precious.txt\n"


def test_reproduce_branches_a_cell_without_following_planted_links(tmp_path, capsys):
    """Issue 22 item 6: the prefix branch copied log.csv and manifest.json with shutil.copyfile, following links
    planted in the cell's directory to files outside the root (a planted config.yaml is refused before, as a
    configuration that is not the cell's); and copied a file a link in the prefix pointed to into the cell."""
    root = tmp_path / "runs"
    cell = root / "digits-lt" / "drw" / "seed0"
    cell.mkdir(parents=True)
    planted = {name: _precious(tmp_path, f"{name}.txt") for name in ("log.csv", "manifest.json", "best.pt")}
    for name, marker in planted.items():
        (cell / name).symlink_to(marker)
    command = ["reproduce", "--recipe", "digits-lt", "--seeds", "1", "--root", str(root), "--no-figures", *_FAST]
    assert main([*command, "--methods", "drw"]) == 0, capsys.readouterr().err
    for name, marker in planted.items():
        assert marker.read_text() == f"KEEP {name}.txt\n", name  # never written through
        assert not (cell / name).is_symlink() and (cell / name).stat().st_size > 0  # the cell has its own file
    assert json.loads((cell / "summary.json").read_text())["method"] == "drw"

    # a link planted in the finished prefix: the next branched cell refuses it instead of copying the file
    secret = _precious(tmp_path, "secret.txt")
    prefix_log = next((root / "digits-lt" / ".prefix").glob("*/seed0/log.csv"))
    prefix_log.unlink()
    prefix_log.symlink_to(secret)
    capsys.readouterr()
    assert main([*command, "--methods", "drs"]) == 2
    err = capsys.readouterr().err
    assert f"{prefix_log} is a symbolic link (to {secret}) where the shared prefix's log.csv should be" in err
    drs_log = root / "digits-lt" / "drs" / "seed0" / "log.csv"
    assert not drs_log.exists() or "KEEP" not in drs_log.read_text()
