"""Hardening: one writer per run directory, and bad input refused with one clear line before training.

The two-writer tests start a real ``m2m train`` in a second process and wait until it holds its run
directory; everything else runs in this process through the CLI's ``main``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from major2minor.cli import main
from major2minor.rundir import LOCK_NAME, RunLock

FAST = ["train.progress=none", "train.threads=1", "optim.milestones=[1]", "train.deferred_epoch=1"]


def _start_training(run_dir: Path, epochs: int = 150, *extra: str) -> subprocess.Popen:
    """A real `m2m train` in another process; returns once it holds ``run_dir``'s lock."""
    cmd = [sys.executable, "-m", "major2minor", "train", *FAST, f"train.epochs={epochs}", f"run.dir={run_dir}", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (run_dir / f"{LOCK_NAME}.owner").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "the training process never took its lock"
        time.sleep(0.05)
    return proc


def test_a_second_writer_is_refused_and_the_live_run_finishes(tmp_path, capsys):
    run = tmp_path / "live"
    proc = _start_training(run)
    try:
        for extra in ([], ["--resume"]):  # a plain second run, and a --resume during the live run
            assert main(["train", *FAST, "train.epochs=150", f"run.dir={run}", *extra]) == 2
            err = capsys.readouterr().err
            assert f"run directory {run} is being written by another process (PID {proc.pid} on " in err
            assert "one run directory has one writer" in err and err.count("\n") == 1
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert json.loads((run / "summary.json").read_text())["best_epoch"] >= 0
    assert not (run / f"{LOCK_NAME}.owner").exists()  # released at the end


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path):
    run = tmp_path / "stale"
    holder = (
        "import os, signal, sys\n"
        "from major2minor.rundir import RunLock\n"
        f"with RunLock({str(run)!r}):\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", holder], capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    assert (run / f"{LOCK_NAME}.owner").exists()  # the dead holder's record is still there
    with RunLock(run):
        assert json.loads((run / f"{LOCK_NAME}.owner").read_text())["pid"] == os.getpid()


def test_the_lock_is_reentrant_in_one_process_and_exclusive_across_processes(tmp_path):
    run = tmp_path / "r"
    with RunLock(run), RunLock(run):
        probe = subprocess.run(
            [sys.executable, "-c", f"from major2minor.rundir import RunLock\nwith RunLock({str(run)!r}): pass"],
            capture_output=True,
            text=True,
        )
        assert probe.returncode != 0 and "is being written by another process" in probe.stderr
    released = subprocess.run(
        [sys.executable, "-c", f"from major2minor.rundir import RunLock\nwith RunLock({str(run)!r}): pass"],
        capture_output=True,
        text=True,
    )
    assert released.returncode == 0, released.stderr


def test_two_grids_sharing_a_root_train_one_generator(tmp_path):
    """The second process waits for the first one's g, then reuses it (never trains it twice)."""
    from major2minor.config import load_config
    from major2minor.pipeline import ensure_generator, generator_config

    overrides = ["method=m2m", *FAST, "train.epochs=60", f"run.root={tmp_path}"]
    g_dir = Path(generator_config(load_config("digits-lt", overrides)).run.dir)
    first = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from major2minor.config import load_config\nfrom major2minor.pipeline import "
            f"ensure_generator\nensure_generator(load_config('digits-lt', {overrides!r}), print)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 60
    while not (g_dir / f"{LOCK_NAME}.owner").exists():
        assert first.poll() is None and time.time() < deadline
        time.sleep(0.05)
    messages = []
    ensure_generator(load_config("digits-lt", overrides), messages.append)
    assert first.wait(timeout=120) == 0
    assert "training the ERM generator g first" in first.stdout.read()
    assert any("being written by another process" in m and "waiting" in m for m in messages), messages
    assert any("using cached ERM generator g" in m for m in messages)
    assert not any("training the ERM generator g first" in m for m in messages)


def test_resume_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "holiday.jpg").write_bytes(b"not a run")
    assert main(["train", *FAST, "train.epochs=2", f"run.dir={folder}", "--resume"]) == 2
    err = capsys.readouterr().err
    assert f"run directory {folder} holds files that are not a run's (holiday.jpg)" in err
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".lock")) == ["holiday.jpg"]


def test_resume_works_anywhere_on_the_command_line(tmp_path):
    run = tmp_path / "r"
    assert main(["train", *FAST, "train.epochs=2", f"run.dir={run}"]) == 0
    assert main(["train", "--resume", *FAST, "train.epochs=2", f"run.dir={run}"]) == 0
    assert main(["train", *FAST, "--resume", "train.epochs=2", f"run.dir={run}"]) == 0


def test_a_run_killed_after_its_summary_gets_its_figures_on_resume(tmp_path):
    run = tmp_path / "r"
    assert main(["train", *FAST, "train.epochs=2", f"run.dir={run}"]) == 0
    for png in run.glob("*.png"):
        png.unlink()
    assert main(["train", *FAST, "train.epochs=2", f"run.dir={run}", "--resume"]) == 0
    assert (run / "curves.png").exists()


def test_ctrl_c_during_reproduce_ends_with_one_line_not_a_traceback(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "major2minor",
        "reproduce",
        "--recipe",
        "digits-lt",
        "--methods",
        "erm",
        "--seeds",
        "1",
        "--root",
        str(tmp_path),
        *FAST,
        "train.epochs=400",
    ]
    # A shell runs background jobs with SIGINT ignored and Python keeps it so: restore the default in the
    # child, or a suite started with `make test &` would see the run ignore Ctrl-C and finish with 0.
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    log = tmp_path / "digits-lt" / "erm" / "seed0" / "log.csv"
    deadline = time.time() + 60
    while not log.exists():
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert "run the same command again" in err


def test_the_ctrl_c_line_comes_after_the_progress_bar_is_cleared(tmp_path, monkeypatch, capsys):
    """On a terminal the bar is one line redrawn in place: the line saying why the run stopped must start on
    a cleared line and be the last thing written, not be glued to the bar's text or cleared after it."""
    from helpers import crash_at_epoch

    crash_at_epoch(monkeypatch, 2)  # Ctrl-C while the second epoch is logged, the bar still open
    argv = ["train", *FAST, "train.progress=bar", "train.epochs=3", f"run.dir={tmp_path / 'r'}"]
    assert main(argv) == 130
    err = capsys.readouterr().err
    bar, line = err.rsplit("m2m: interrupted;", 1)
    assert "batch/s" in bar or "batch]" in bar  # the bar was drawn
    assert bar.endswith("\r"), repr(bar[-80:])  # ... and cleared (back to column 0) before the line
    assert line.endswith("finished epoch.\n") and "\r" not in line, repr(line)


def test_the_grid_closes_its_bar_before_saying_it_was_interrupted(tmp_path, monkeypatch, capsys):
    """The grid's bar (on stderr) and its log line (on stdout) share one terminal: the bar goes first."""
    from helpers import crash_at_epoch

    import major2minor.experiments as experiments

    real_close = experiments.GridProgress.close

    def close(self):
        print("<grid bar closed>")
        real_close(self)

    monkeypatch.setattr(experiments.GridProgress, "close", close)
    crash_at_epoch(monkeypatch, 1)  # Ctrl-C in the grid's first cell
    argv = ["reproduce", "--recipe", "digits-lt", "--methods", "erm", "--seeds", "1", "--root", str(tmp_path), *FAST]
    assert main(argv) == 130
    out = capsys.readouterr().out
    assert 0 <= out.find("<grid bar closed>") < out.find("grid interrupted; run the same command again"), out


# ------------------------------------------------------------------------------------------------
# bad input: one line naming the key, the value, what is allowed and the fix, before any training

BAD_INPUTS = [
    (["data.val_per_class=0"], r"data\.val_per_class=0 must be >= 1; model selection needs a validation split"),
    (["data.test_per_class=0"], r"data\.test_per_class=0 must be >= 1; the test split cannot be empty"),
    (["train.seed=-1"], r"train\.seed=-1 must be in \[0, 9223372036854775807\]; any non-negative integer"),
    (["optim.lr=1e300"], r"optim\.lr=1e\+300 must be in \(0, 1e\+06\]; the paper uses 0\.1"),
    (["model.width=0"], r"model\.width=0 must be >= 1; the CNN's base number of channels"),
    (["model.hidden=[256,-3]"], r"model\.hidden=\[256, -3\] must be a list whose every item is >= 1"),
    (["model.hidden=0"], r"model\.hidden=\[0\] must be a list whose every item is >= 1"),
    (["train.device=banana"], r"train\.device='banana' must be auto, cpu, cuda or cuda:N"),
    (["foo.bar=1"], r"unknown config key 'foo\.bar': 'foo' is not a config section\. Sections and top-level keys: "),
    (["method=m2m", "m2m.lam=-1"], r"m2m\.lam=-1\.0 must be >= 0; the weight of f's seed-class logit"),
    (["method=m2m", "m2m.steps=0"], r"m2m\.steps=0 must be in \[1, 1000\]; T, gradient steps per translation"),
    (["method=m2m", "m2m.step_size=0"], r"m2m\.step_size=0\.0 must be > 0; eta"),
    (["method=ldam", "loss.ldam_scale=0"], r"loss\.ldam_scale=0\.0 must be > 0; the logit scale s"),
    (["method=ldam", "loss.ldam_max_margin=-1"], r"loss\.ldam_max_margin=-1\.0 must be >= 0"),
    (["data.image_size=0"], r"data\.image_size=0 must be >= 1; the side in pixels"),
    # checked before the scale is applied: 0 used to run 1 epoch and record 1.0, -1 to blame the milestones
    (["train.schedule_scale=0"], r"train\.schedule_scale=0\.0 must be > 0; 0\.2 turns the 200-epoch recipes into 40"),
    (["train.schedule_scale=-1"], r"train\.schedule_scale=-1\.0 must be > 0"),
    (["train.schedule_scale=nan"], r"train\.schedule_scale=nan must be a finite number"),
    (
        ["loss.name=focal", "loss.focal_gamma=1e6"],
        r"loss\.focal_gamma=1000000\.0 must be in \[0, 5\]; the M2m paper uses 1",
    ),
]


@pytest.mark.parametrize("overrides, message", BAD_INPUTS, ids=[" ".join(o) for o, _ in BAD_INPUTS])
def test_bad_input_gets_one_clear_line(overrides, message, tmp_path, capsys):
    import re

    assert main(["train", *FAST, "train.epochs=2", f"run.dir={tmp_path / 'r'}", *overrides]) == 2
    err = capsys.readouterr().err
    assert err.startswith("m2m: error: ") and err.count("\n") == 1, err
    assert re.search(message, err), err
    assert not (tmp_path / "r").exists()  # refused before anything was written


def test_an_empty_validation_split_is_refused_before_training():
    from major2minor.config import load_config
    from major2minor.data import Split, build_dataset
    from major2minor.engine import check_splits

    bundle = build_dataset(load_config().data)
    bundle.val = Split(bundle.val.x[:0], bundle.val.y[:0])
    with pytest.raises(ValueError, match=r"the validation split of digits-lt is empty; .* set data\.val_per_class=N"):
        check_splits(bundle)


def test_yaml_syntax_errors_name_the_file_and_the_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochs: 3\n   batch_size: [64\n")
    assert main(["train", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"recipe {bad} is not valid YAML at line" in err and err.count("\n") == 1

    run = tmp_path / "r"
    assert main(["train", *FAST, "train.epochs=2", f"run.dir={run}"]) == 0
    (run / "config.yaml").write_text("data: {name: [digits\n")
    assert main(["train", *FAST, "train.epochs=2", f"run.dir={run}", "--resume"]) == 2
    assert f"run configuration {run / 'config.yaml'} is not valid YAML at line" in capsys.readouterr().err
    assert main(["report", str(run), "--no-figures"]) == 2
    assert f"run configuration {run / 'config.yaml'} is not valid YAML at line" in capsys.readouterr().err


def test_a_key_given_twice_in_a_recipe_is_refused_with_its_line(tmp_path, capsys):
    """Plain YAML keeps the last of two equal keys: the first train: block would be dropped without a word."""
    twice = tmp_path / "twice.yaml"
    twice.write_text("train:\n  epochs: 400\noptim:\n  lr: 0.05\ntrain:\n  batch_size: 64\n")
    assert main(["train", str(twice), *FAST, "train.epochs=2", f"run.dir={tmp_path / 'r'}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and not (tmp_path / "r").exists()
    assert f"recipe {twice} is not valid YAML at line 5, column 1: key 'train' is given twice (first at line 1)" in err
    assert "Merge the two into one" in err
    nested = tmp_path / "nested.yaml"  # also inside a section, and in flow style on one line
    nested.write_text("train:\n  epochs: 2\n  epochs: 3\noptim: {lr: 0.1, lr: 0.2}\n")
    assert main(["train", str(nested), *FAST]) == 2
    assert "at line 3, column 3: key 'epochs' is given twice (first at line 2)" in capsys.readouterr().err
    merged = tmp_path / "merged.yaml"  # a YAML merge key ('<<') may be overridden: that is not a duplicate
    merged.write_text(f"base: &b {{epochs: 9}}\ntrain:\n  <<: *b\n  epochs: 2\nrun: {{dir: {tmp_path / 'm'}}}\n")
    from major2minor.config import read_yaml

    assert read_yaml(merged)["train"] == {"epochs": 2}


# ------------------------------------------------------------------------------------------------
# labels of any integer type from a user's own data set; float labels refused


def _blobs(label_dtype):
    def build(cfg, seed=0):
        from major2minor.data.core import DataBundle, Split

        rng = np.random.default_rng(seed)

        def split(n):
            x = np.concatenate([rng.normal(size=(n, 2)) + 3 * c for c in range(3)]).astype(np.float32)
            return Split(torch.from_numpy(x), np.repeat(np.arange(3), n).astype(label_dtype))

        return DataBundle("blobs", split(20), split(5), split(5), 3, ["a", "b", "c"], bounds=None)

    return build


@pytest.mark.parametrize("label_dtype", [np.int32, np.uint8, np.int16])
def test_a_data_set_with_labels_of_any_integer_type_trains(label_dtype, tmp_path):
    from major2minor.registry import DATASETS

    DATASETS.register("blobs", _blobs(label_dtype))
    try:
        run = tmp_path / "r"
        argv = ["train", *FAST, "data.name=blobs", "model.name=mlp", "train.epochs=2", f"run.dir={run}"]
        assert main([*argv, "data.profile=natural"]) == 0
        assert json.loads((run / "summary.json").read_text())["train_counts"] == [20, 20, 20]
    finally:
        DATASETS.unregister("blobs")


def test_a_data_set_with_float_labels_is_refused_by_name(tmp_path, capsys):
    from major2minor.registry import DATASETS

    DATASETS.register("blobs", _blobs(np.float32))
    try:
        argv = ["train", *FAST, "data.name=blobs", "model.name=mlp", "data.profile=natural", f"run.dir={tmp_path}"]
        assert main(argv) == 2
    finally:
        DATASETS.unregister("blobs")
    err = capsys.readouterr().err
    assert err.startswith("m2m: error: split labels y must be integer class indices 0..C-1, got a float32 array")
    assert "y.long()" in err and err.count("\n") == 1


def test_resume_refuses_data_that_changed_since_the_run_started(tmp_path, monkeypatch, capsys):
    """A CSV whose labels were swapped after a kill: the resume is refused, the run's files untouched."""
    from helpers import crash_at_epoch

    table = tmp_path / "table.csv"
    rows = [(i / 10, (i * 7 % 13) / 13, "cat" if i < 60 else "dog" if i < 80 else "eel") for i in range(90)]
    table.write_text("a,b,label\n" + "".join(f"{a},{b},{lab}\n" for a, b, lab in rows))
    run = tmp_path / "run"
    args = ["train", "csv", f"data.root={table}", *FAST, "train.epochs=3", "train.batch_size=16", f"run.dir={run}"]
    crash_at_epoch(monkeypatch, 2)
    assert main(args) == 130  # killed in its second epoch
    monkeypatch.undo()
    manifest = (run / "manifest.json").read_text()
    swapped = {"cat": "dog", "dog": "cat", "eel": "eel"}
    table.write_text("a,b,label\n" + "".join(f"{a},{b},{swapped[lab]}\n" for a, b, lab in rows))
    assert main([*args, "--resume"]) == 2
    err = capsys.readouterr().err
    assert f"cannot resume {run}: its data changed since the run started (data checksum " in err
    assert (run / "manifest.json").read_text() == manifest  # the record of the original data is kept


def test_the_translation_cost_is_estimated_before_training_and_warned_when_huge(tmp_path):
    import warnings

    from major2minor.config import load_config
    from major2minor.pipeline import train

    cfg = load_config(
        "digits-lt", ["method=m2m-self", *FAST, "train.epochs=3", "m2m.steps=1000", f"run.dir={tmp_path / 'r'}"]
    )
    messages = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # stop the run at the warning
        with pytest.raises(RuntimeWarning, match=r"translation will cost \d+x a plain training step .*m2m\.steps=1000"):
            train(cfg, log=messages.append)
    estimate = [m for m in messages if m.startswith("M2m: translating from epoch 2 (T0=1)")]
    assert estimate and "m2m.steps=1000" in estimate[0]
    assert not any(m.startswith("epoch 1/") for m in messages)  # before the first epoch was trained
