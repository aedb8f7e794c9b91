"""Helpers shared by the test modules (imported as ``helpers``: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import csv
from pathlib import Path

from major2minor.rundir import RunDir


def read_log_rows(path: Path):
    """log.csv rows without the timing columns (the only ones allowed to differ between runs)."""
    with open(path, newline="") as fh:
        return [{k: v for k, v in row.items() if "seconds" not in k} for row in csv.DictReader(fh)]


def crash_at_epoch(monkeypatch, n_rows: int):
    """Make the engine die (KeyboardInterrupt) while writing the log of epoch ``n_rows``; returns the
    real writer so a test can put it back (``monkeypatch.setattr(RunDir, "write_log", real)``)."""
    real = RunDir.write_log

    def write(self, rows):
        if len(rows) == n_rows:
            raise KeyboardInterrupt(f"simulated crash in epoch {n_rows}")
        real(self, rows)

    monkeypatch.setattr(RunDir, "write_log", write)
    return real


def interrupted_run(tiny_cfg, tmp_path: Path, monkeypatch, name: str = "cut"):
    """A 4-epoch run killed in its 3rd epoch: last.pt = end of epoch 2, last.prev.pt = end of epoch 1."""
    import pytest

    from major2minor.pipeline import train

    real = crash_at_epoch(monkeypatch, 3)
    cfg = tiny_cfg("train.epochs=4", f"run.dir={tmp_path / name}")
    with pytest.raises(KeyboardInterrupt):
        train(cfg, log=None)
    monkeypatch.setattr(RunDir, "write_log", real)
    return cfg, tmp_path / name
