"""`m2m reproduce` on digits-lt: runs the grid, skips finished cells, resumes interrupted ones, is deterministic."""

from __future__ import annotations

import json

import pytest

from major2minor import engine
from major2minor.experiments import GridError, build_grid, parse_methods, parse_seeds, reproduce, run_cell

# Two epochs; DRS switches on at the second so both methods are exercised.
FAST = ["train.epochs=2", "train.deferred_epoch=1", "train.progress=none", "train.device=cpu", "train.threads=1"]


class Interrupt(Exception):
    """Stands in for Ctrl-C / a killed job after the first epoch's checkpoint."""


def _interrupt_after_first_epoch(msg: str) -> None:
    if msg.startswith("epoch 1/"):  # logged after last.pt of epoch 1 is saved
        raise Interrupt(msg)


def _summaries(result):
    return {(c.method, c.seed): c.run_dir / "summary.json" for c in result.cells}


def test_grid_then_skip_on_second_call(tmp_path, monkeypatch, capsys):
    first = reproduce("digits-lt", "erm,drs", 2, root=tmp_path, overrides=FAST, figures=False, log=None)
    assert [(c.method, c.seed, c.status) for c in first.cells] == [  # both branch from the shared epoch 1
        ("erm", 0, "branched"),
        ("erm", 1, "branched"),
        ("drs", 0, "branched"),
        ("drs", 1, "branched"),
    ]
    assert first.cells[0].run_dir == tmp_path / "digits-lt" / "erm" / "seed0"
    report = tmp_path / "digits-lt" / "report"
    assert first.report_dir == report and (report / "results.md").exists() and (report / "results.csv").exists()
    assert [(r.method, r.n, r.is_reference) for r in first.rows] == [("erm", 2, True), ("drs", 2, False)]
    mtimes = {k: p.stat().st_mtime_ns for k, p in _summaries(first).items()}

    def no_training(*args, **kwargs):
        raise AssertionError("a finished cell was trained again")

    # a finished cell is reused through the engine, which checks it (settings, data, files) and trains nothing
    monkeypatch.setattr(engine.Trainer, "train_epoch", no_training)
    second = reproduce("digits-lt", ["erm", "drs"], 2, root=tmp_path, overrides=FAST, figures=False, log=None)
    assert {c.status for c in second.cells} == {"skipped"}
    assert {k: p.stat().st_mtime_ns for k, p in _summaries(second).items()} == mtimes
    assert [r.cell("bacc") for r in second.rows] == [r.cell("bacc") for r in first.rows]

    # the command line: same grid -> all skipped, table printed, exit 0
    from major2minor.cli import main

    assert (
        main(
            [
                "reproduce",
                "--recipe",
                "digits-lt",
                "--methods",
                "erm,drs",
                "--seeds",
                "2",
                "--root",
                str(tmp_path),
                "--no-figures",
                *FAST,
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "| Loss | Re-balancing | bACC | GM |" in out and "| CE | DRS |" in out

    # other overrides would silently reuse stale results: refused, naming the key
    with pytest.raises(GridError, match=r"train.epochs=2 there, 3 now"):
        reproduce("digits-lt", "erm", 1, root=tmp_path, overrides=[*FAST, "train.epochs=3"], log=None)


@pytest.mark.slow  # three grid cells; in-process resume is checked in test_engine and test_reliability
def test_resume_interrupted_cell_and_determinism(tmp_path):
    # an interrupted cell: last.pt after epoch 1, no summary
    ((cell, cfg),) = build_grid("digits-lt", ["drs"], [0], tmp_path / "a", FAST)
    with pytest.raises(Interrupt):
        run_cell(cell, cfg, log=_interrupt_after_first_epoch, share=False)
    assert (cell.run_dir / "last.pt").exists() and not (cell.run_dir / "summary.json").exists()

    resumed = reproduce("digits-lt", "drs", 1, root=tmp_path / "a", overrides=FAST, figures=False, log=None)
    assert resumed.cells[0].status == "resumed"
    log_rows = (cell.run_dir / "log.csv").read_text().strip().splitlines()
    assert len(log_rows) == 1 + 2  # header + both epochs, none twice

    # determinism: the same cell trained twice from scratch gives identical metrics, and so does the resumed one
    fresh_b = reproduce("digits-lt", "drs", 1, root=tmp_path / "b", overrides=FAST, figures=False, log=None)
    fresh_c = reproduce("digits-lt", "drs", 1, root=tmp_path / "c", overrides=FAST, figures=False, log=None)

    def metrics(result):
        s = result.cells[0].summary
        return json.dumps(
            {k: s[k] for k in ("best_epoch", "val_at_best", "test_at_best", "test_at_last")}, sort_keys=True
        )

    assert metrics(fresh_b) == metrics(fresh_c)
    assert metrics(resumed) == metrics(fresh_b)


def test_grid_validation_errors(tmp_path):
    with pytest.raises(GridError, match="conflicts with the grid"):
        build_grid("digits-lt", ["erm"], [0], tmp_path, ["method=drs"])
    with pytest.raises(GridError, match="conflicts with the grid"):
        build_grid("digits-lt", ["erm"], [0], tmp_path, ["train.seed=3"])
    with pytest.raises(KeyError, match="valid:"):
        parse_methods("erm,dsr")  # typo caught before any training
    with pytest.raises(GridError, match="twice"):
        parse_methods("erm,erm")
    with pytest.raises(GridError, match="empty"):
        parse_methods(" , ")
    assert parse_seeds(3) == [0, 1, 2] and parse_seeds("2", first_seed=5) == [5, 6]
    assert parse_seeds("0,3,7") == [0, 3, 7]
    for bad in ("0", "x", "1,1", "-1,2"):
        with pytest.raises(GridError, match="seeds="):
            parse_seeds(bad)
    with pytest.raises(GridError, match="reference='ros' is not among"):
        reproduce("digits-lt", "erm", 1, root=tmp_path, overrides=FAST, reference="ros", log=None)


def test_jobs_must_be_positive(tmp_path):
    with pytest.raises(GridError, match=r"jobs=0 must be >= 1"):
        reproduce("digits-lt", "erm", 1, root=tmp_path, overrides=FAST, figures=False, log=None, jobs=0)
