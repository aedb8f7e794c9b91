"""Figures write non-empty PNG files; bad inputs and a missing matplotlib give clear errors."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("matplotlib")

from major2minor import figures  # noqa: E402
from major2minor.figures import (
    MissingDependencyError,
    plot_class_counts,
    plot_per_class_recall,  # noqa: E402
    plot_training_curves,
    read_log,
    translation_gallery,
)
from major2minor.rundir import RunDir, write_run_figures

PNG = b"\x89PNG\r\n\x1a\n"


def assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG and len(data) > 2000, path


def write_log(path, epochs=4, m2m=False):
    cols = ["epoch", "lr", "train_loss", "val_bacc", "val_gm", "seen_per_class", "class_weights"]
    if m2m:
        cols += ["m2m_acceptance", "m2m_accepted_per_class"]
    lines = [",".join(cols)]
    for e in range(1, epochs + 1):  # log.csv numbers epochs from 1
        vals = [str(e), "0.1", f"{2.0 - 0.3 * e}", f"{0.3 + 0.1 * e}", f"{0.1 * e}", "10 5 2", ""]
        if m2m:
            vals += ["" if e <= 2 else f"{0.2 * e}", "" if e <= 2 else "0 3 4"]  # re-balanced from T0 + 1 = 3
        lines.append(",".join(vals))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_class_counts_and_per_class_recall(tmp_path):
    assert_png(plot_class_counts([5, 100, 20, 0], tmp_path / "counts.png", class_names=["a", "b", "c", "d"]))
    assert_png(plot_class_counts(list(range(200, 0, -1)), tmp_path / "many.png"))  # no tick labels
    curves = {"ERM": [0.9, 0.5, None, 0.0], "M2m": [80.0, 70.0, 60.0, 50.0]}
    with pytest.raises(ValueError, match="curves\\['ERM'\\] has 4 classes but train_counts has 3"):
        plot_per_class_recall(curves, [1, 2, 3], tmp_path / "r.png")
    assert_png(plot_per_class_recall({"ERM": curves["ERM"]}, [5, 100, 20, 1], tmp_path / "r1.png"))
    assert_png(plot_per_class_recall({"M2m": curves["M2m"]}, [5, 100, 20, 1], tmp_path / "r2.png"))
    with pytest.raises(ValueError, match="counts=\\[\\] is empty"):
        plot_class_counts([], tmp_path / "x.png")
    with pytest.raises(ValueError, match="must end in .png"):
        plot_class_counts([1, 2], tmp_path / "x.pdf")


def test_training_curves_single_multi_and_m2m(tmp_path):
    log = write_log(tmp_path / "log.csv")
    rows = read_log(log)
    assert rows[1]["epoch"] == 2.0 and rows[1]["train_loss"] == pytest.approx(1.4) and rows[0]["class_weights"] is None
    assert rows[0]["seen_per_class"] == "10 5 2"
    assert_png(plot_training_curves(log, tmp_path / "one.png", deferred_epoch=2))
    m2m = write_log(tmp_path / "m2m.csv", m2m=True)
    assert_png(plot_training_curves({"ERM": [rows, rows], "M2m": m2m}, tmp_path / "multi.png", title="t"))
    with pytest.raises(ValueError, match="logs hold no rows"):
        plot_training_curves([], tmp_path / "none.png")
    with pytest.raises(FileNotFoundError, match="log.csv"):
        read_log(tmp_path / "missing" / "log.csv")


def test_translation_gallery(tmp_path):
    rng = np.random.default_rng(0)
    seeds = rng.random((5, 1, 8, 8))
    trans = np.clip(seeds + 0.1, 0, 1)
    out = translation_gallery(
        seeds,
        trans,
        [0, 0, 1, 2, 0],
        [9, 8, 7, 6, 5],
        [0.95, 0.5, 0.91, 0.2, 0.99],
        [True, False, True, False, True],
        tmp_path / "gallery.png",
        class_names=[str(i) for i in range(10)],
    )
    assert_png(out)
    # tensors, channels-last uint8 RGB, more items than max_items
    x = torch.randint(0, 256, (20, 32, 32, 3), dtype=torch.uint8)
    assert_png(
        translation_gallery(
            x,
            x.flip(1),
            torch.zeros(20),
            torch.ones(20),
            torch.rand(20),
            torch.rand(20) > 0.5,
            tmp_path / "rgb.png",
            max_items=6,
        )
    )
    with pytest.raises(ValueError, match="g_conf has 2 entries but seeds has 5"):
        translation_gallery(seeds, trans, [0] * 5, [1] * 5, [0.9, 0.8], [True] * 5, tmp_path / "bad.png")
    with pytest.raises(ValueError, match="translations has shape"):
        translation_gallery(seeds, trans[:4], [0] * 5, [1] * 5, [0.9] * 5, [True] * 5, tmp_path / "bad.png")
    with pytest.raises(ValueError, match="needs images"):
        translation_gallery(
            np.zeros((3, 300)), np.zeros((3, 300)), [0] * 3, [1] * 3, [0.9] * 3, [True] * 3, tmp_path / "bad.png"
        )


def test_write_run_figures(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    counts = [100, 30, 5]
    (run / "manifest.json").write_text(
        json.dumps({"name": "toy", "train_counts": counts, "class_names": ["x", "y", "z"]})
    )
    write_log(run / "log.csv", m2m=True)
    (run / "config.yaml").write_text("rebalance:\n  name: drs\ntrain:\n  deferred_epoch: 2\n")
    written = write_run_figures(run)
    assert [p.name for p in written] == ["class_counts.png", "curves.png"]  # not finished: no summary
    (run / "summary.json").write_text(
        json.dumps(
            {
                "method": "m2m",
                "train_counts": counts,
                "test_at_best": {"per_class_recall": [0.9, 0.5, 0.1]},
                "test_at_last": {"per_class_recall": [0.8, 0.5, None]},
            }
        )
    )
    messages = []
    written = write_run_figures(run, log=messages.append)
    assert [p.name for p in written] == ["class_counts.png", "curves.png", "per_class_recall.png"]
    for p in written:
        assert_png(p)
    assert messages and "per_class_recall.png" in messages[0]
    assert figures._deferred_epoch(RunDir(run).read_config()) == 2
    with pytest.raises(FileNotFoundError, match="run_dir="):
        write_run_figures(tmp_path / "nope")


def test_missing_matplotlib(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # makes `import matplotlib.figure` fail
    with pytest.raises(MissingDependencyError, match=r"figures need matplotlib.*pip install major2minor"):
        plot_class_counts([3, 2, 1], tmp_path / "c.png")
    with pytest.raises(ImportError):  # also an ImportError for callers
        plot_class_counts([3, 2, 1], tmp_path / "c.png")
    messages = []
    assert write_run_figures(tmp_path, log=messages.append) == []  # the engine's call never fails a run
    assert "skipped" in messages[0]
    with pytest.raises(MissingDependencyError):
        write_run_figures(tmp_path, missing_ok=False)
