import json

import pytest
import torch

from major2minor.pipeline import train
from major2minor.rundir import RunDir, RunDirError


def _strip(history):
    return [{k: v for k, v in row.items() if "seconds" not in k} for row in history]


def test_erm_end_to_end_writes_run_directory(tiny_cfg, tmp_path):
    cfg = tiny_cfg()
    summary = train(cfg, log=None)
    run = tmp_path / "runs" / "digits-lt" / "erm" / "seed0"
    for name in ("config.yaml", "manifest.json", "environment.json", "log.csv", "summary.json", "best.pt", "last.pt"):
        assert (run / name).exists(), name
    assert 0.0 <= summary["test_at_best"]["bacc"] <= 1.0
    assert summary["best_epoch"] in range(1, 4)  # epochs are numbered from 1
    lines = (run / "log.csv").read_text().splitlines()
    assert len(lines) == 1 + 3 and lines[0].startswith("epoch,lr,")
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["train_counts"] == summary["train_counts"]
    counts = summary["train_counts"]
    assert manifest["imbalance_ratio"] == pytest.approx(max(counts) / min(counts))
    assert counts == sorted(counts, reverse=True) and counts[0] == 90


def test_same_seed_same_result(tiny_cfg, tmp_path):
    a = train(tiny_cfg("run.dir=" + str(tmp_path / "a")), log=None)
    b = train(tiny_cfg("run.dir=" + str(tmp_path / "b")), log=None)
    assert a["test_at_best"] == b["test_at_best"]


def test_resume_after_interruption_continues_from_saved_epoch(tiny_cfg, tmp_path, monkeypatch):
    full = train(tiny_cfg("train.epochs=4", "run.dir=" + str(tmp_path / "full")), log=None)

    real_write = RunDir.write_log

    def crash_at_third_epoch(self, rows):
        if len(rows) == 3:
            raise KeyboardInterrupt("simulated crash during epoch 3")
        real_write(self, rows)

    monkeypatch.setattr(RunDir, "write_log", crash_at_third_epoch)
    cfg = tiny_cfg("train.epochs=4", "run.dir=" + str(tmp_path / "cut"))
    with pytest.raises(KeyboardInterrupt):
        train(cfg, log=None)
    monkeypatch.setattr(RunDir, "write_log", real_write)
    ckpt = torch.load(tmp_path / "cut" / "last.pt", weights_only=False)
    assert ckpt["epoch"] == 1 and ckpt["state"]["epoch"] == 2  # epochs 0 and 1 were saved

    with pytest.raises(RunDirError, match="--resume"):
        train(cfg, log=None)  # never silently overwritten
    messages = []
    resumed = train(cfg, resume=True, log=messages.append)
    assert any("resuming" in m and "epoch 2" in m for m in messages)
    assert resumed["test_at_best"] == full["test_at_best"]
    assert resumed["test_at_last"] == full["test_at_last"]
    s_full = json.loads((tmp_path / "full" / "summary.json").read_text())
    assert s_full["best_epoch"] == resumed["best_epoch"]


def test_finished_run_is_refused_without_resume_and_reused_with_it(tiny_cfg, tmp_path):
    cfg = tiny_cfg("run.dir=" + str(tmp_path / "r"))
    first = train(cfg, log=None)
    with pytest.raises(RunDirError, match="finished run"):
        train(cfg, log=None)
    assert train(cfg, resume=True, log=None)["test_at_best"] == first["test_at_best"]


def test_global_rng_untouched(tiny_cfg):
    torch.manual_seed(123)
    before = torch.get_rng_state()
    train(tiny_cfg(), log=None)
    assert torch.equal(before, torch.get_rng_state())


def test_cli_train_and_list(tmp_path, capsys):
    from major2minor.cli import main

    assert main(["list", "methods"]) == 0
    out = capsys.readouterr().out
    for name in ("erm", "drs", "m2m", "ldam-m2m", "m2m-self", "m2m-no-reject"):
        assert name in out
    assert main(["train", "train.epochs=1", "train.progress=none", f"run.dir={tmp_path / 'c'}"]) == 0
    assert (tmp_path / "c" / "summary.json").exists()
    assert main(["train", "optim.lrr=1"]) == 2
    assert "Did you mean 'optim.lr'" in capsys.readouterr().err


def test_finished_run_with_other_settings_is_not_reused(tiny_cfg, tmp_path):
    train(tiny_cfg("run.dir=" + str(tmp_path / "r")), log=None)
    with pytest.raises(RunDirError, match="trained with other settings: optim.lr=0.05 there, 0.2 now"):
        train(tiny_cfg("run.dir=" + str(tmp_path / "r"), "optim.lr=0.2"), resume=True, log=None)


def test_the_counts_preview_lists_a_few_classes_once():
    from major2minor.engine import counts_preview

    assert counts_preview([140, 49, 21]) == "[140, 49, 21]"  # was "[140, 49, 21]...[140, 49, 21]"
    assert counts_preview(range(10, 0, -1)) == "[10, 9, 8]...[3, 2, 1]"


def test_without_a_bar_each_epoch_line_carries_the_runs_eta(tiny_cfg, tmp_path):
    messages = []
    train(tiny_cfg("train.epochs=3", "train.progress=none", f"run.dir={tmp_path / 'r'}"), log=messages.append)
    lines = [m for m in messages if m.startswith("epoch ")]
    assert len(lines) == 3 and all(" left)" in line for line in lines[:2]) and " left" not in lines[2], lines
