"""Shared prefixes: a cell branched from its group's prefix is bit-identical to the cell trained from scratch."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from major2minor.config import load_config
from major2minor.experiments import build_grid, reproduce
from major2minor.grid import Cell, run_cell
from major2minor.pipeline import train
from major2minor.prefix import epochs_with_and_without_sharing, prefix_config

FAST = ["train.epochs=5", "train.deferred_epoch=3", "optim.milestones=[4]", "train.progress=none"]
TIMINGS = ("wall_seconds", "train_seconds", "translation_seconds", "epoch_seconds", "m2m_seconds", "run_dir")


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in TIMINGS}
    return obj


def _rows(run: Path):
    with open(run / "log.csv", newline="") as fh:
        return [{k: v for k, v in r.items() if "seconds" not in k} for r in csv.DictReader(fh)]


def _weights(path: Path):
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


@pytest.mark.parametrize("method", ["drs", *(pytest.param(m, marks=pytest.mark.slow) for m in ("drw", "m2m", "erm"))])
def test_a_branch_is_bit_identical_to_the_cell_trained_from_scratch(method, tmp_path):
    overrides = [*FAST, "m2m.beta=0.5", "m2m.gamma=0.1", "m2m.step_size=0.5"]
    scratch_cfg = load_config("digits-lt", [*overrides, f"method={method}", f"run.root={tmp_path}"])
    scratch_cfg.run.dir = str(tmp_path / "scratch")
    scratch = train(scratch_cfg, log=None)

    ((cell, cfg),) = build_grid("digits-lt", [method], [0], tmp_path, overrides)
    assert prefix_config(cfg) is not None
    run_cell(cell, cfg, log=None, share=True)
    assert cell.status == "branched"
    branched = json.loads((cell.run_dir / "summary.json").read_text())

    assert _strip(branched) == _strip(scratch)
    assert _rows(cell.run_dir) == _rows(tmp_path / "scratch")
    for name in ("best.pt", "last.pt"):
        a, b = _weights(cell.run_dir / name) if (cell.run_dir / name).exists() else None, None
        if a is None:
            continue
        b = _weights(tmp_path / "scratch" / name)
        assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a), name
    if method == "m2m":
        assert branched["m2m"]["accepted"] > 0  # the translation really ran in the branch


def test_methods_active_from_epoch_one_have_no_prefix():
    for method in ("ros", "rw", "cb-rw", "smote"):
        assert prefix_config(load_config("digits-lt", [*FAST, f"method={method}"])) is None
    a = prefix_config(load_config("digits-lt", [*FAST, "method=m2m"]))
    b = prefix_config(load_config("digits-lt", [*FAST, "method=drw"]))
    c = prefix_config(load_config("digits-lt", [*FAST, "method=ldam-drw"]))
    assert a.run.dir == b.run.dir != c.run.dir  # CE methods share one prefix, LDAM methods another
    assert (a.method, c.method, a.train.epochs) == ("erm", "ldam", 3)


@pytest.mark.slow  # the longest end-to-end grid; a branch is checked below
def test_reproduce_shares_prefixes_and_counts_the_epochs(tmp_path):
    messages = []
    result = reproduce(
        "digits-lt",
        "erm,drs,drw,m2m,ldam,ldam-drw,rw",
        2,
        root=tmp_path,
        overrides=FAST,
        figures=False,
        log=messages.append,
    )
    statuses = {(c.method, c.seed): c.status for c in result.cells}
    assert statuses[("rw", 0)] == "trained" and statuses[("m2m", 1)] == "branched"
    grid_line = next(m for m in messages if m.startswith("grid: 14 cells"))
    # 14 cells x 5 epochs = 70; with sharing: 4 prefixes (CE, LDAM x 2 seeds) of 3 epochs replace 12 x 3
    assert "70 training epochs cell by cell; 46 with 4 shared prefixes" in grid_line
    # M2m's g: two seeds and an ERM row, so each seed's M2m cell uses the other seed's ERM cell; no g trained
    assert "M2m's g is another seed's ERM cell (1 cells, no extra g trained)" not in grid_line
    assert "M2m's g is another seed's ERM cell (2 cells, no extra g trained)" in grid_line
    assert "ERM generator(s)" not in grid_line and not (tmp_path / ".generators").exists()
    one_seed = []
    reproduce("digits-lt", "m2m", 1, root=tmp_path / "one", overrides=FAST, figures=False, log=one_seed.append)
    assert "plus 1 ERM generator(s) g for M2m, 5 epochs, one per seed" in next(m for m in one_seed if "grid:" in m)
    assert epochs_with_and_without_sharing(
        [cfg for _, cfg in build_grid("digits-lt", ["erm", "rw"], [0], tmp_path, FAST)]
    ) == {"without": 10, "with": 10, "prefixes": 1}
    again = reproduce("digits-lt", "erm,m2m", 2, root=tmp_path, overrides=FAST, figures=False, log=None)
    assert {c.status for c in again.cells} == {"skipped"}


@pytest.mark.slow  # a grid with two jobs (processes)
def test_a_grid_runs_two_cells_at_once_with_the_same_results(tmp_path):
    seq = reproduce("digits-lt", "erm,drs", 1, root=tmp_path / "seq", overrides=FAST, figures=False, log=None)
    par = reproduce("digits-lt", "erm,drs", 1, root=tmp_path / "par", overrides=FAST, figures=False, log=None, jobs=2)
    assert {c.status for c in par.cells} == {"branched"}
    for a, b in zip(seq.cells, par.cells):
        assert a.summary["test_at_best"] == b.summary["test_at_best"]  # threads differ: same on this tiny CNN
    assert isinstance(par.cells[0], Cell)


def test_grid_eta_counts_only_tasks_that_trained(monkeypatch):
    """Cells found finished (and cached g's) take no time: the ETA's rate must not count them, or a resumed
    grid promises seconds for hours of work."""
    from major2minor import grid

    lines = []
    progress = grid.GridProgress(total=4, quiet=False, log=lines.append)
    now = [1000.0]
    monkeypatch.setattr(grid.time, "time", lambda: now[0])
    progress.t0 = 1000.0
    for name, seconds in (("a", 0.0), ("b", 0.0), ("c", 600.0)):  # two instant skips, then 600 s of training
        now[0] += seconds
        progress.started()
        progress.finished(grid.Task("cell", name, cfg=None, extra={"seconds": seconds}))
    assert lines[0] == "[1/4] a: ready in 0.0s" and lines[1] == "[2/4] b: ready in 0.0s"  # no rate yet: no ETA
    assert lines[2].endswith("about 10.0 min left")  # 600 s per trained task, one task left


@pytest.mark.parametrize(
    "recipe, overrides, which, expected",
    [
        ("digits-lt", ["method=m2m"], "g", ".generators/digits-lt-7c3a07557f03/seed1000"),
        ("digits-lt", ["method=ldam-m2m", "train.seed=3"], "g", ".generators/digits-lt-a01054f91889/seed1003"),
        ("cifar10-lt", ["method=m2m"], "prefix", "cifar10-lt/.prefix/erm-1835c5821b97/seed0"),
        ("cifar10-lt", ["method=drw", "train.seed=2"], "prefix", "cifar10-lt/.prefix/erm-1835c5821b97/seed2"),
        ("cifar10-lt", ["method=ldam-drw"], "prefix", "cifar10-lt/.prefix/ldam-66fa090b3afa/seed0"),
    ],
)
def test_cached_g_and_prefix_directories_keep_their_names(recipe, overrides, which, expected):
    """The settings digests naming cached g's and shared prefixes, pinned as pipeline.py and prefix.py computed
    them before config.settings_digest: existing caches must be found again under their names."""
    from major2minor.pipeline import generator_config

    cfg = load_config(recipe, [*overrides, "run.root=ROOT"])
    made = generator_config(cfg) if which == "g" else prefix_config(cfg)
    assert Path(made.run.dir).relative_to("ROOT").as_posix() == expected
