"""TensorBoard logger: tags, per-class lists, the no-op logger, and the error without tensorboard."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest

from major2minor.figures import MissingDependencyError
from major2minor.tblog import NullTBLogger, TBLogger, tag_for


class FakeWriter:
    def __init__(self, log_dir):
        self.log_dir, self.scalars, self.flushed, self.closed = log_dir, [], 0, False

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))

    def flush(self):
        self.flushed += 1

    def close(self):
        self.closed = True


ROW = {
    "epoch": 3,
    "lr": 0.1,
    "train_loss": 1.5,
    "val_bacc": 0.7,
    "test_bacc_at_best": None,
    "seen_per_class": [10, 5, 2],
    "class_weights": None,
    "m2m_acceptance": 0.25,
    "epoch_seconds": 1.0,
    "note": "text",
    "m2m_accepted_per_class": [0, 3, float("nan")],
}


def test_tags():
    assert tag_for("train_loss") == "train/loss" and tag_for("val_bacc") == "val/bacc"
    assert tag_for("m2m_g_target_prob") == "m2m/g_target_prob" and tag_for("lr") == "optim/lr"
    assert tag_for("epoch_seconds") == "misc/epoch_seconds"


def test_log_row_with_fake_writer(tmp_path):
    with TBLogger(tmp_path, writer_factory=FakeWriter) as tb:
        n = tb.log_row(3, ROW)
    w = tb.writer
    assert w.log_dir == str(tmp_path / "tb") and w.closed and w.flushed == 1
    tags = {t: (v, s) for t, v, s in w.scalars}
    assert n == len(w.scalars)
    assert tags["optim/lr"] == (0.1, 3) and tags["train/loss"] == (1.5, 3) and tags["m2m/acceptance"] == (0.25, 3)
    assert tags["misc/seen_per_class/class_002"] == (2.0, 3)
    assert "m2m/accepted_per_class/class_002" not in tags  # NaN skipped
    assert not any(t.startswith(("misc/epoch/", "misc/note", "test/")) for t in tags)  # None/text/epoch skipped
    small = TBLogger(tmp_path, writer_factory=FakeWriter, per_class_limit=2)
    small.log_row(0, ROW)
    assert not any("class_" in t for t, _, _ in small.writer.scalars)  # lists longer than the limit


def test_from_config_and_null_logger(tmp_path):
    off = TBLogger.from_config(SimpleNamespace(run=SimpleNamespace(tensorboard=False)), tmp_path)
    assert isinstance(off, NullTBLogger) and not off.enabled and off.log_row(0, ROW) == 0
    off.close()
    assert not (tmp_path / "tb").exists()


def test_missing_tensorboard_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    with pytest.raises(MissingDependencyError, match=r"run.tensorboard=true.*major2minor\[tb\]"):
        TBLogger.from_config(SimpleNamespace(run=SimpleNamespace(tensorboard=True)), tmp_path)


def test_real_tensorboard_writes_events(tmp_path):
    pytest.importorskip("tensorboard")
    tb = TBLogger(tmp_path)
    tb.log_row(0, ROW)
    tb.close()
    assert any(p.name.startswith("events.out.tfevents") for p in (tmp_path / "tb").iterdir())


def test_per_class_tags_use_the_data_sets_class_names(tmp_path):
    tb = TBLogger(tmp_path, writer_factory=FakeWriter, class_names=["cat", "dog", "sea lion"])
    tb.log_row(3, ROW)
    tags = {t for t, _, _ in tb.writer.scalars}
    assert {"misc/seen_per_class/000_cat", "misc/seen_per_class/001_dog", "misc/seen_per_class/002_sea_lion"} <= tags
    assert not any("class_00" in t for t in tags)
