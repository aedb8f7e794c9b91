"""Result tables from hand-made run directories: exact mean ± std, relative gains, grouping, errors."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import yaml

from major2minor.report import ReportError, collect_runs, format_markdown, mean_std, summarize_runs, write_report

COUNTS = [100, 50, 20, 10, 5]


def _metrics(bacc, gm, recall=None):
    recall = recall if recall is not None else [0.9, 0.8, 0.6, 0.4, 0.2]
    return {
        "acc": bacc,
        "bacc": bacc,
        "gm": gm,
        "macro_f1": bacc,
        "per_class_recall": recall,
        "head_recall": 0.9,
        "mid_recall": 0.6,
        "tail_recall": 0.2,
        "many_recall": float("nan"),
        "medium_recall": 0.63,
        "few_recall": 0.3,
    }


def make_run(
    root: Path,
    method,
    seed,
    bacc,
    gm,
    loss="ce",
    rebalance="none",
    last=None,
    config=None,
    recipe="digits-lt",
    wall=10.0,
) -> Path:
    """A finished run directory as the engine writes it (only the parts the report reads)."""
    d = root / recipe / method / f"seed{seed}"
    d.mkdir(parents=True)
    last_bacc, last_gm = last if last is not None else (bacc - 0.01, gm - 0.01)
    summary = {
        "run_dir": str(d),
        "recipe": recipe,
        "method": method,
        "loss": loss,
        "rebalance": rebalance,
        "seed": seed,
        "dataset": recipe,
        "train_counts": COUNTS,
        "best_epoch": 3,
        "val_at_best": _metrics(bacc, gm),
        "test_at_best": _metrics(bacc, gm),
        "test_at_last": _metrics(last_bacc, last_gm),
        "wall_seconds": wall,
    }
    # allow_nan: the engine writes NaN for empty groups (many_recall here), as Python's json does.
    (d / "summary.json").write_text(json.dumps(summary, indent=2))
    if config is not None:
        (d / "config.yaml").write_text(yaml.safe_dump(config))
    (d / "manifest.json").write_text(json.dumps({"train_counts": COUNTS, "class_names": list("abcde")}))
    return d


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    for seed, (b, g) in enumerate([(0.70, 0.60), (0.72, 0.62), (0.74, 0.64)]):
        make_run(root, "erm", seed, b, g, last=(0.60 + 0.01 * seed, 0.50))
    for seed, (b, g) in enumerate([(0.78, 0.70), (0.79, 0.70), (0.80, 0.70)]):
        make_run(root, "m2m", seed, b, g, rebalance="m2m", last=(0.75, 0.65))
    return root


def test_mean_std_exact_values(runs):
    rows = summarize_runs(collect_runs(runs))
    assert [r.method for r in rows] == ["erm", "m2m"]
    erm, m2m = rows
    assert erm.n == 3 and erm.seeds == [0, 1, 2]
    assert erm.mean["bacc"] == pytest.approx(72.0) and erm.std["bacc"] == pytest.approx(2.0)  # ddof=1
    assert erm.mean["gm"] == pytest.approx(62.0) and erm.std["gm"] == pytest.approx(2.0)
    assert m2m.mean["bacc"] == pytest.approx(79.0) and m2m.std["bacc"] == pytest.approx(1.0)
    assert m2m.mean["gm"] == pytest.approx(70.0) and m2m.std["gm"] == pytest.approx(0.0)
    assert erm.cell("bacc") == "72.00 ± 2.00" and m2m.cell("gm") == "70.00 ± 0.00"
    # relative gain against ERM, from the unrounded means, in %
    assert erm.is_reference and erm.gain_cell("bacc") == "ref"
    assert m2m.rel_gain["bacc"] == pytest.approx(100 * 7 / 72)
    assert m2m.gain_cell("bacc") == "+9.72%" and m2m.gain_cell("gm") == "+12.90%"
    assert (erm.loss_label, erm.rebalance_label, m2m.loss_label, m2m.rebalance_label) == ("CE", "–", "CE", "M2m")
    assert m2m.per_class_recall == pytest.approx([90, 80, 60, 40, 20])
    assert erm.class_names == list("abcde")


def test_population_std_and_last_epoch(runs):
    rows = summarize_runs(collect_runs(runs), ddof=0, at="last")
    erm = rows[0]
    assert erm.mean["bacc"] == pytest.approx(61.0)
    assert erm.std["bacc"] == pytest.approx(math.sqrt(2 / 3))  # values 60, 61, 62; divisor n
    assert erm.cell("bacc") == "61.00 ± 0.82"
    assert rows[1].cell("bacc") == "75.00 ± 0.00"


def test_markdown_and_csv_files(runs, tmp_path):
    out = tmp_path / "report"
    rows = write_report(runs, out, figures=False, command="m2m reproduce --recipe digits-lt", log=None)
    md = (out / "results.md").read_text()
    assert "| Loss | Re-balancing | bACC | GM | n | rel. bACC | rel. GM | time/run (s) |" in md
    assert "| CE | – | 72.00 ± 2.00 | 62.00 ± 2.00 | 3 | ref | ref | 10.0 |" in md
    assert "| CE | M2m | 79.00 ± 1.00 | 70.00 ± 0.00 | 3 | +9.72% | +12.90% | 10.0 |" in md
    assert "sample std, divisor n-1" in md and "best-validation epoch" in md
    assert "m2m reproduce --recipe digits-lt" in md
    with open(out / "results.csv", newline="") as fh:
        recs = list(csv.DictReader(fh))
    assert [r["method"] for r in recs] == ["erm", "m2m"]
    assert recs[0]["bACC"] == "72.00 ± 2.00" and recs[0]["n_seeds"] == "3" and recs[0]["seeds"] == "0 1 2"
    assert float(recs[1]["bacc_mean"]) == pytest.approx(79.0) and float(recs[1]["bacc_std"]) == pytest.approx(1.0)
    assert float(recs[1]["bacc_rel_gain_pct"]) == pytest.approx(9.7222, abs=1e-3)
    assert recs[0]["many_recall_mean"] == ""  # NaN (no class > 100) stays blank
    assert len(json.loads((out / "results.json").read_text())) == len(rows) == 2


def test_reference_choice_and_errors(runs):
    rows = summarize_runs(collect_runs(runs), reference="m2m")
    assert rows[1].is_reference and rows[0].rel_gain["bacc"] == pytest.approx(100 * (72 - 79) / 79)
    rows = summarize_runs(collect_runs(runs), reference=None)
    assert not any(r.is_reference for r in rows) and "rel. bACC" not in format_markdown(rows, None)
    with pytest.raises(ReportError, match=r"reference='drs'.*erm, m2m"):
        summarize_runs(collect_runs(runs), reference="drs")
    with pytest.raises(ReportError, match="at='middle'"):
        summarize_runs(collect_runs(runs), at="middle")
    with pytest.raises(ReportError, match="ddof=2"):
        summarize_runs(collect_runs(runs), ddof=2)


def test_single_seed_has_no_std(tmp_path):
    make_run(tmp_path, "erm", 0, 0.5, 0.4)
    row = summarize_runs(collect_runs(tmp_path))[0]
    assert row.cell("bacc") == "50.00"  # ddof=1 with n=1: no std
    assert summarize_runs(collect_runs(tmp_path), ddof=0)[0].cell("bacc") == "50.00 ± 0.00"
    assert mean_std([], 1)[0] != mean_std([], 1)[0]  # NaN


def test_config_variants_are_separate_rows(tmp_path):
    base = {
        "recipe": "digits-lt",
        "method": "m2m",
        "train": {"seed": 0, "epochs": 30},
        "m2m": {"gamma": 0.9, "generator": ["g/seed0.pt"]},
        "run": {"dir": "x"},
    }
    for seed in (0, 1):
        for gamma, root in ((0.9, "a"), (0.99, "b")):
            cfg = json.loads(json.dumps(base))
            cfg["train"]["seed"], cfg["m2m"]["gamma"] = seed, gamma
            cfg["m2m"]["generator"], cfg["run"]["dir"] = [f"g/seed{seed}.pt"], f"{root}/{seed}"
            make_run(tmp_path / root, "m2m", seed, 0.7 + gamma / 10, 0.6, rebalance="m2m", config=cfg)
    rows = summarize_runs(collect_runs(tmp_path))
    assert [(r.variant, r.n) for r in rows] == [("m2m.gamma=0.9", 2), ("m2m.gamma=0.99", 2)]
    assert "| CE | M2m (m2m.gamma=0.9) |" in format_markdown(rows)


def test_duplicate_seed_and_missing_inputs(tmp_path):
    make_run(tmp_path / "a", "erm", 0, 0.5, 0.4)
    make_run(tmp_path / "b", "erm", 0, 0.6, 0.4)
    with pytest.raises(ReportError, match="same config and seed 0"):
        summarize_runs(collect_runs(tmp_path))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        collect_runs([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReportError, match="no summary.json"):
        collect_runs([tmp_path / "empty"])
    # a directory given twice (and its parent) is read once
    assert len(collect_runs([tmp_path / "a", tmp_path / "a", tmp_path / "a" / "digits-lt"])) == 1


def test_cli_report(runs, tmp_path, capsys):
    from major2minor.cli import main

    out = tmp_path / "rep"
    assert main(["report", str(runs), "--out", str(out), "--no-figures", "--at", "last", "--ddof", "0"]) == 0
    text = capsys.readouterr().out
    assert "| CE | – | 61.00 ± 0.82 |" in text and (out / "results.csv").exists()
    assert main(["report", str(runs), "--reference", "nope", "--no-figures"]) == 2
    assert "reference='nope'" in capsys.readouterr().err
    assert main(["report", str(runs / "digits-lt"), "--no-figures"]) == 0  # default out: DIR/report
    assert (runs / "digits-lt" / "report" / "results.md").exists()


@pytest.mark.slow  # a whole reproduce grid (g, a shared prefix, two cells); m2m report on runs is checked above
def test_report_on_a_reproduce_root_skips_the_cached_generators(tmp_path, capsys):
    """`m2m report ROOT` and `m2m report ROOT/RECIPE` after `m2m reproduce --root ROOT` just work."""
    from major2minor.cli import main

    fast = ["train.epochs=3", "train.deferred_epoch=1", "optim.milestones=[2]", "train.progress=none"]
    assert (
        main(
            [
                "reproduce",
                "--recipe",
                "digits-lt",
                "--methods",
                "erm,m2m",
                "--seeds",
                "1",
                "--root",
                str(tmp_path),
                "--no-figures",
                *fast,
            ]
        )
        == 0
    )
    assert list(tmp_path.glob(".generators/*/seed*/summary.json"))  # an ERM run the report must not see
    capsys.readouterr()
    for target in (tmp_path, tmp_path / "digits-lt"):
        assert main(["report", str(target), "--no-figures", "--out", str(tmp_path / "out")]) == 0
        table = (tmp_path / "out" / "results.md").read_text()
        assert table.count("| CE | – |") == 1 and "| CE | M2m |" in table
