"""Results a user can trust: a finished run is reused only when it is the result asked for (settings, data,
files, g), a deferred method is judged on its own epochs, and a grid's M2m uses another seed's ERM as g."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from major2minor import engine
from major2minor.cli import main
from major2minor.experiments import build_grid, reproduce
from major2minor.grid import cross_seed_generators, plan

CSV_FAST = [
    "train.epochs=3",
    "train.deferred_epoch=2",
    "optim.milestones=[2]",
    "train.progress=none",
    "train.threads=1",
    "train.batch_size=32",
]


def write_table(path: Path, seed: int) -> Path:
    """A CSV of three imbalanced classes (80 / 40 / 20 rows), two features and a ``label`` column."""
    rng = np.random.default_rng(seed)
    rows = ["a,b,label"]
    for label, n in (("x", 80), ("y", 40), ("z", 20)):
        centre = {"x": (0, 0), "y": (2, 0), "z": (0, 2)}[label]
        for a, b in rng.normal(centre, 1.0, size=(n, 2)):
            rows.append(f"{a:.4f},{b:.4f},{label}")
    path.write_text("\n".join(rows) + "\n")
    return path


def _train(capsys, *args: str) -> tuple:
    code = main(["train", "csv", *CSV_FAST, *args])
    out = capsys.readouterr()
    return code, out.out + out.err


@pytest.fixture
def finished(tmp_path, capsys):
    """A finished ERM run on table.csv in ROOT/csv/erm/seed0."""
    table = write_table(tmp_path / "table.csv", 0)
    code, text = _train(capsys, f"data.root={table}", f"run.root={tmp_path / 'runs'}")
    assert code == 0, text
    return tmp_path / "runs" / "csv" / "erm" / "seed0"


# -- 1. a finished run is reused only on its own data ----------------------------------------------


def test_a_finished_run_is_not_reused_on_other_data(finished, tmp_path, capsys):
    other = write_table(tmp_path / "table2.csv", 1)
    code, text = _train(capsys, f"data.root={other}", f"run.root={tmp_path / 'runs'}", "--resume")
    assert code != 0 and "trained on other data" in text and "data checksum" in text, text
    assert "reusing its summary" not in text
    # the same data is reused
    code, text = _train(capsys, f"data.root={tmp_path / 'table.csv'}", f"run.root={tmp_path / 'runs'}", "--resume")
    assert code == 0 and "reusing its summary" in text, text


def test_reproduce_does_not_report_a_run_made_on_other_data(finished, tmp_path, capsys):
    other = write_table(tmp_path / "table2.csv", 1)
    argv = ["reproduce", "--recipe", "csv", "--methods", "erm", "--seeds", "1", "--root", str(tmp_path / "runs")]
    code = main([*argv, "--no-figures", *CSV_FAST, f"data.root={other}"])
    text = "".join(capsys.readouterr())
    assert code != 0 and "trained on other data" in text and "skipped" not in text, text


def test_a_missing_data_file_is_reported_as_missing_not_as_an_existing_run(finished, tmp_path, capsys):
    code, text = _train(capsys, f"data.root={tmp_path / 'missing.csv'}", f"run.root={tmp_path / 'runs'}")
    assert code != 0 and "missing.csv" in text and "already holds a finished run" not in text, text


# -- 2. edited files are detected ------------------------------------------------------------------


def test_an_edited_config_yaml_is_not_reused_as_another_schedule(finished, tmp_path, capsys):
    config = yaml.safe_load((finished / "config.yaml").read_text())
    config["train"]["epochs"] = 2  # "a 3-epoch run edited to 2 epochs"
    (finished / "config.yaml").write_text(yaml.safe_dump(config))
    fast = [a for a in CSV_FAST if not a.startswith("train.epochs")]
    table = f"data.root={tmp_path / 'table.csv'}"
    code = main(["train", "csv", *fast, "train.epochs=2", table, f"run.dir={finished}", "--resume"])
    text = "".join(capsys.readouterr())
    assert code != 0 and "config.yaml is not the one the run wrote" in text, text


def test_edited_numbers_in_summary_json_are_refused_by_resume_and_report(finished, tmp_path, capsys):
    summary = json.loads((finished / "summary.json").read_text())
    summary["test_at_best"]["bacc"] = 0.999
    (finished / "summary.json").write_text(json.dumps(summary))
    code, text = _train(capsys, f"data.root={tmp_path / 'table.csv'}", f"run.root={tmp_path / 'runs'}", "--resume")
    assert code != 0 and "summary.json is not the one the run wrote" in text, text
    assert main(["report", str(finished), "--no-figures", "--out", str(tmp_path / "rep")]) != 0
    assert "summary.json is not the one the run wrote" in "".join(capsys.readouterr())
    assert not (tmp_path / "rep" / "results.md").exists()


def test_a_run_finished_without_a_seal_is_not_reused(finished, tmp_path, capsys):
    from major2minor.checkpoint import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(finished / "last.pt")
    del ckpt["finished"]  # as an earlier version wrote it
    save_checkpoint(ckpt, finished / "last.pt")
    code, text = _train(capsys, f"data.root={tmp_path / 'table.csv'}", f"run.root={tmp_path / 'runs'}", "--resume")
    assert code != 0 and "cannot be verified" in text, text


# -- 3. a deferred method is judged on its own epochs ----------------------------------------------

VAL_BACC = [0.50, 0.90, 0.60, 0.70]  # epoch 2 (before T0 = 3) is the whole-run best on validation


@pytest.fixture
def scripted_validation(monkeypatch):
    """Validation bACC per epoch from VAL_BACC (test metrics stay real)."""
    real = engine.Trainer.evaluate
    epochs = []  # one entry per validation pass, i.e. per epoch

    def evaluate(self, parts, split):
        metrics = real(self, parts, split)
        if split is parts.bundle.val:
            metrics["bacc"] = VAL_BACC[len(epochs) % len(VAL_BACC)]  # each run here has 4 epochs
            epochs.append(metrics["bacc"])
        return metrics

    monkeypatch.setattr(engine.Trainer, "evaluate", evaluate)


@pytest.mark.parametrize("method", ["drs", "drw"])
def test_a_deferred_method_reports_its_best_epoch_from_t0_on(method, scripted_validation, tmp_path, capsys):
    table = write_table(tmp_path / "table.csv", 0)
    args = ["train.epochs=4", "train.deferred_epoch=2", "optim.milestones=[3]", "train.progress=none"]
    code = main(["train", "csv", f"method={method}", *args, f"data.root={table}", f"run.dir={tmp_path / 'r'}"])
    text = "".join(capsys.readouterr())
    assert code == 0, text
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["best_epoch"] == 4 and summary["val_at_best"]["bacc"] == 0.70
    assert summary["selection"]["from_epoch"] == 3 and summary["selection"]["overall_best_epoch"] == 2
    assert summary["selection"]["val_bacc_at_overall_best"] == 0.90
    assert any("before T0 was better on validation" in w for w in summary["warnings"])
    assert "pre-T0 epoch 2 better on val" in text and "before T0 was better on validation" in text
    # the rule can be switched off: every epoch may be reported
    all_epochs = ["train.select=all", f"data.root={table}", f"run.dir={tmp_path / 'all'}"]
    code = main(["train", "csv", f"method={method}", *args, *all_epochs])
    assert code == 0
    summary = json.loads((tmp_path / "all" / "summary.json").read_text())
    assert summary["best_epoch"] == 2 and summary["selection"]["from_epoch"] == 1 and "warnings" not in summary


def test_erm_reports_its_best_epoch_over_the_whole_run(scripted_validation, tmp_path, capsys):
    table = write_table(tmp_path / "table.csv", 0)
    args = ["train.epochs=4", "train.deferred_epoch=2", "optim.milestones=[3]", "train.progress=none"]
    assert main(["train", "csv", *args, f"data.root={table}", f"run.dir={tmp_path / 'r'}"]) == 0
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["best_epoch"] == 2 and summary["selection"]["from_epoch"] == 1


# -- cross-seed g and the grid's order (issue: the headline grid) ----------------------------------

GRID_FAST = ["train.epochs=2", "train.deferred_epoch=1", "train.progress=none", "train.threads=1"]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_two_seed_grid_uses_the_other_seeds_erm_as_g_and_trains_no_extra_g(tmp_path):
    result = reproduce("digits-lt", "erm,m2m", 2, root=tmp_path, overrides=GRID_FAST, figures=False, log=None)
    assert all(c.summary is not None for c in result.cells)
    assert not (tmp_path / ".generators").exists()  # no separate ERM g was trained
    for seed, other in ((0, 1), (1, 0)):
        summary = json.loads((tmp_path / "digits-lt" / "m2m" / f"seed{seed}" / "summary.json").read_text())
        (g,) = summary["generators"]
        erm_best = tmp_path / "digits-lt" / "erm" / f"seed{other}" / "best.pt"
        assert g["sha256"] == _sha(erm_best) and g["method"] == "erm" and g["seed"] == other
    results = (tmp_path / "digits-lt" / "report" / "results.md").read_text()
    assert "erm seed 1" in results and "erm seed 0" in results  # the report says which g each M2m cell used
    # `m2m report` on a partial grid: the finished rows, and the cells still missing
    (tmp_path / "digits-lt" / "m2m" / "seed1" / "summary.json").unlink()
    assert main(["report", str(tmp_path / "digits-lt"), "--no-figures"]) == 0
    results = (tmp_path / "digits-lt" / "report" / "results.md").read_text()
    assert "## Not finished yet" in results and f"{tmp_path / 'digits-lt' / 'm2m' / 'seed1'}: epoch 2 of 2" in results


def test_a_one_seed_grid_keeps_its_own_cached_g():
    grid = build_grid("digits-lt", ["erm", "m2m"], [0], "unused", GRID_FAST)
    assert cross_seed_generators(grid) == {}
    assert [t.kind for t in plan(grid, share=True)] == ["prefix", "cell", "generator", "cell"]


def test_the_grid_works_seed_by_seed_for_early_answers(tmp_path):
    grid = build_grid("digits-lt", ["erm", "drs", "drw", "m2m"], [0, 1, 2], tmp_path, GRID_FAST)
    order = [t.name for t in plan(grid, share=True)]
    assert order == [
        "prefix erm seed 0", "erm seed 0", "drs seed 0", "drw seed 0",
        "prefix erm seed 1", "erm seed 1", "m2m seed 0",
        "drs seed 1", "drw seed 1", "m2m seed 1",
        "prefix erm seed 2", "erm seed 2", "drs seed 2", "drw seed 2", "m2m seed 2",
    ]  # fmt: skip
    g = {seed: erm.seed for (method, seed), (erm, _) in cross_seed_generators(grid).items()}
    assert g == {0: 1, 1: 0, 2: 1}


def test_report_on_a_grid_with_nothing_finished_says_how_far_it_got(tmp_path, capsys):
    prefix = tmp_path / "cifar10-lt" / ".prefix" / "erm-abc" / "seed0"
    prefix.mkdir(parents=True)
    (prefix / "config.yaml").write_text("train:\n  epochs: 160\n")
    (prefix / "log.csv").write_text("epoch,lr\n1,0.02\n2,0.04\n")
    assert main(["report", str(tmp_path / "cifar10-lt"), "--no-figures"]) != 0
    err = capsys.readouterr().err
    assert f"no run has finished yet (shared prefix {prefix}: epoch 2 of 160)" in err, err
