"""Every bad input of the hardening review, fed to the real CLI: prints a Markdown table of the input, the
exit status and the first line the user reads (stderr), all before any training starts.

    python tools/bad_inputs.py > tools/bad_inputs.md     # a few minutes on a 2-core CPU

Files it needs (a garbled Twitter file, CSV/NPZ data, a broken recipe, a truncated log) are written to a
temporary folder in exactly their real formats; nothing outside it is touched.  The issue 22 item 6 rows plant
links to marker files (in that folder) and say whether those were kept; a few rows of items 7 and 9 run in a
subprocess (an ASCII locale, a SIGKILL inside the first checkpoint write) or simulate a full disk.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from major2minor.cli import main
from major2minor.data.core import DataBundle, Split
from major2minor.registry import DATASETS

FAST = ["train.progress=none", "train.threads=1", "optim.milestones=[1]", "train.deferred_epoch=1", "train.epochs=2"]
TWEETS = "i\tO\nlove\tV\nthis\tD\n\nsong\tN\nis\tV\nill\tA\n"


def run(argv: list[str]) -> tuple[int, str]:
    """Exit status and the first line on stderr (on stdout for an input that is accepted)."""
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = main(argv)
        except SystemExit as exit_:  # argparse
            code = exit_.code
    lines = [line for line in (err.getvalue() or out.getvalue()).splitlines() if line.strip()]
    return code, lines[0] if lines else "(nothing printed)"


def write_csv(path: Path, labels: list[str], features: np.ndarray | None = None) -> Path:
    x = np.random.default_rng(0).random((len(labels), 2)) if features is None else features
    rows = ["a,b,label"] + [f"{r[0]},{r[1]},{lab}" for r, lab in zip(x, labels)]
    path.write_text("\n".join(rows) + "\n")
    return path


def file_cases(tmp: Path) -> list[tuple[str, list[str]]]:
    """(what, argv) for the inputs that need a file."""
    recipe = tmp / "bad.yaml"
    recipe.write_text("train:\n  epochs: 3\n   batch_size: [64\n")
    run_dir = tmp / "finished"
    run(["train", *FAST, f"run.dir={run_dir}"])
    (run_dir / "config.yaml").write_text("data: {name: [digits\n")
    tweets = tmp / "tweets"
    tweets.mkdir()
    for name in ("tweets-train.txt", "tweets-dev.txt", "tweets-devtest.txt"):
        (tweets / name).write_text(TWEETS, encoding="utf-8")
    (tweets / "tweets-train.txt").write_bytes(b"\xff\xfe\x00bad")
    prices = write_csv(tmp / "prices.csv", [f"{v:.2f}" for v in np.random.default_rng(1).random(40) * 3])
    ones = write_csv(tmp / "ones.csv", ["1", "1.0", "2", "2.0"] * 20)
    x = np.random.default_rng(0).random((40, 3)).astype(np.float32)
    x[4, 2] = np.nan
    np.savez(tmp / "nan.npz", x=x, y=np.arange(40) % 2)
    logged = tmp / "logged"
    run(["train", *FAST, f"run.dir={logged}"])
    (logged / "log.csv").write_text("epoch,train_loss,val_bacc\r\n0,2.1,0.3\r\n1,1.9")
    holiday = tmp / "holiday"
    holiday.mkdir()
    (holiday / "holiday.jpg").write_bytes(b"\xff\xd8")
    twice = tmp / "twice.yaml"
    twice.write_text("train:\n  epochs: 400\noptim:\n  lr: 0.05\ntrain:\n  batch_size: 64\n")
    r52 = tmp / "r52"
    r52.mkdir()
    (r52 / "r52-train.txt").write_text(
        "".join(f"{t}\tnet profit shr qtr\n" for t in ("earn", "acq") * 40) + "earn\tnet pro"
    )
    (r52 / "r52-test.txt").write_text("".join(f"{t}\tnet profit\n" for t in ("earn", "acq") * 10))
    data = ["data.profile=natural"]
    return [
        ("YAML syntax error in a recipe", ["train", str(recipe)]),
        ("YAML syntax error in a run's config.yaml (train --resume)", ["train", f"run.dir={run_dir}", "--resume"]),
        ("YAML syntax error in a run's config.yaml (report)", ["report", str(run_dir), "--no-figures"]),
        ("garbled Twitter file", ["train", *FAST, "data.name=twitter-pos", f"data.root={tweets}", "model.name=mlp"]),
        ("continuous CSV label column", ["train", *FAST, "data.name=csv", f"data.root={prices}", *data]),
        ("CSV labels 1, 1.0, 2, 2.0 (accepted: 2 classes)", ["data", "info", "csv", "--root", str(ones), *data]),
        ("NaN feature in an NPZ", ["train", *FAST, "data.name=npz", f"data.root={tmp / 'nan.npz'}", *data]),
        ("m2m report on a truncated log.csv", ["report", str(logged)]),
        ("--resume on a folder that is not a run", ["train", *FAST, f"run.dir={holiday}", "--resume"]),
        ("--resume anywhere on the line", ["train", "--resume", *FAST, f"run.dir={holiday}"]),
        ("a key given twice in a recipe (two train: blocks)", ["train", str(twice), *FAST, f"run.dir={tmp / 't'}"]),
        (
            "a truncated R52 file (81 of 6,532 documents)",
            ["train", "reuters", f"data.root={r52}", *FAST, f"run.dir={tmp / 't'}"],
        ),
        (
            "a data set with int32 labels (accepted)",
            ["train", *FAST, *data, "data.name=int32-labels", "model=mlp", f"run.dir={tmp / 'i'}"],
        ),
        (
            "a data set with float labels",
            ["train", *FAST, *data, "data.name=float-labels", "model=mlp", f"run.dir={tmp / 'f'}"],
        ),
    ]


def labelled_blobs(dtype):
    """A user's own data set (three 2-d blobs) whose labels have the given NumPy type."""

    def build(cfg, seed: int = 0) -> DataBundle:
        rng = np.random.default_rng(seed)

        def split(n: int) -> Split:
            x = np.concatenate([rng.normal(size=(n, 2)) + 3 * c for c in range(3)]).astype(np.float32)
            return Split(torch.from_numpy(x), np.repeat(np.arange(3), n).astype(dtype))

        return DataBundle("blobs", split(20), split(5), split(5), 3, ["a", "b", "c"], bounds=None)

    return build


KEY_CASES = [
    ["data.val_per_class=0"],
    ["data.test_per_class=0"],
    ["train.seed=-1"],
    ["optim.lr=1e300"],
    ["model.width=0"],
    ["model.hidden=[256,-3]"],
    ["model.hidden=0"],
    ["train.device=banana"],
    ["foo.bar=1"],
    ["method=m2m", "m2m.lam=-1"],
    ["method=m2m", "m2m.steps=0"],
    ["method=ldam", "loss.ldam_scale=0"],
    ["method=ldam", "loss.ldam_max_margin=-1"],
    ["data.image_size=0"],
    ["train.schedule_scale=0"],
    ["train.schedule_scale=-1"],
    ["loss.name=focal", "loss.focal_gamma=1e6"],
]

BENCH_CASES = [
    ["--threads", "-1"],
    ["--steps", "-1"],
    ["--warmup", "-1"],
    ["--batch-size", "0"],
    ["--batch-size", "-8"],
    ["--repeats", "0"],
    ["--methods", "bogus"],
    ["--device", "banana"],
]


# ------------------------------------------------------------------------------------------------
# issue 22 items 6 (links planted in a run directory), 7 (tracebacks) and 9 (unclear messages)

ASCII_LOCALE = {"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
NON_ASCII = "i22-r\u00fcn"


def planted(link: Path, target: Path) -> Path:
    """A link at ``link`` to a marker file ``target`` outside every run root."""
    target.write_text("KEEP\n")
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)
    return target


def with_marker(argv: list[str], *markers: Path) -> Callable[[], tuple[int, str]]:
    """Run ``argv``; the line says, after it, whether the files the planted links point to were kept."""

    def case() -> tuple[int, str]:
        code, line = run(argv)
        kept = all(m.read_text() == "KEEP\n" for m in markers)
        return code, f"{line} [marker files {'kept' if kept else 'OVERWRITTEN'}]"

    return case


def full_disk(run_dir: Path) -> Callable[[], tuple[int, str]]:
    """The disk fills while the second epoch's last.pt is written (its fsync fails with ENOSPC)."""

    def case() -> tuple[int, str]:
        real, seen = os.fsync, []

        def fsync(fd: int) -> None:
            if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(".last.pt."):
                seen.append(fd)
                if len(seen) == 2:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            real(fd)

        os.fsync = fsync
        try:
            return run(["train", *FAST, "train.epochs=3", f"run.dir={run_dir}"])
        finally:
            os.fsync = real

    return case


def in_subprocess(argv: list[str], env: dict[str, str]) -> Callable[[], tuple[int, str]]:
    def case() -> tuple[int, str]:
        proc = subprocess.run([sys.executable, "-m", "major2minor", *argv], capture_output=True, text=True, env=env)
        lines = [line for line in (proc.stderr or proc.stdout).splitlines() if line.strip()]
        return proc.returncode, lines[-1] if lines else "(nothing printed)"

    return case


def killed_in_first_checkpoint(run_dir: Path) -> Callable[[], tuple[int, str]]:
    """SIGKILL inside the first last.pt write (before its rename), then the same command with --resume."""
    script = (
        "import os, signal, sys\nreal = os.replace\n"
        "def replace(src, dst):\n"
        "    if os.path.basename(str(dst)) == 'last.pt':\n        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    real(src, dst)\nos.replace = replace\nfrom major2minor.cli import main\n"
        f"sys.exit(main({['train', *FAST, f'run.dir={run_dir}']!r}))\n"
    )

    def case() -> tuple[int, str]:
        subprocess.run([sys.executable, "-c", script], capture_output=True)
        left = len(list(run_dir.glob(".last.pt.*.tmp")))
        code, line = run(["train", *FAST, f"run.dir={run_dir}", "--resume"])
        after = len(list(run_dir.glob(".*.tmp")))
        return code, f"{line} [{left} .last.pt.*.tmp left by the kill, {after} after the next start]"

    return case


def image_folder(root: Path) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for name, n in (("cat", 12), ("dog", 6), ("eel", 4)):
        (root / name).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (10, 12, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def damaged_copies(tmp: Path) -> dict[str, Path]:
    """Copies of one finished run, each with one file damaged."""
    finished = tmp / "i22-finished"
    run(["train", *FAST, f"run.dir={finished}"])
    copies = {}
    for name in ("summary-list", "summary-cut", "config-list", "log-header"):
        copies[name] = Path(shutil.copytree(finished, tmp / f"i22-{name}", ignore=shutil.ignore_patterns(".lock*")))
    (copies["summary-list"] / "summary.json").write_text("[1, 2]\n")
    (copies["summary-cut"] / "summary.json").write_text('{"best_epoch": ')
    (copies["config-list"] / "config.yaml").write_text("- 1\n- 2\n")
    for name in ("last.pt", "last.prev.pt"):  # a copied summary and config, without the sealed checkpoint
        (copies["config-list"] / name).unlink(missing_ok=True)
    log = copies["log-header"] / "log.csv"
    log.write_text(log.read_text().splitlines()[0] + "\n")
    return copies


def link_cases(tmp: Path) -> list[tuple[str, Any]]:
    """Item 6: files written (or copied) through links planted in run, prefix and tune directories."""
    owner = planted(tmp / "i22-owned" / ".lock.owner", tmp / "i22-marker-owner")
    tune_owner = planted(tmp / "i22-tune" / "tune" / "digits-lt-erm" / ".lock.owner", tmp / "i22-marker-tune")
    cell = tmp / "i22-grid" / "digits-lt" / "drw" / "seed0"
    cell_markers = [planted(cell / n, tmp / f"i22-marker-{n}") for n in ("log.csv", "manifest.json")]
    grid = ["reproduce", "--recipe", "digits-lt", "--seeds", "1", "--root", str(tmp / "i22-grid"), "--no-figures"]
    tune = ["tune", "digits-lt", "--method", "erm", "optim.lr=0.01:0.2", "--trials", "1", "--seeds", "1"]
    return [
        (
            ".lock.owner planted as a link in a run directory",
            with_marker(["train", *FAST, f"run.dir={tmp / 'i22-owned'}"], owner),
        ),
        (
            ".lock.owner planted as a link in a tune directory",
            with_marker([*tune, "--root", str(tmp / "i22-tune"), *FAST], tune_owner),
        ),
        (
            "log.csv, manifest.json planted as links in a grid cell (prefix branch; accepted)",
            with_marker([*grid, "--methods", "drw", *FAST], *cell_markers),
        ),
    ]


def tracebacks_and_unclear_cases(tmp: Path) -> list[tuple[str, Any]]:
    """Items 7 and 9."""
    copies = damaged_copies(tmp)
    for name, content in (
        ("random", np.random.default_rng(0).bytes(4096)),
        ("header", b"SQLite format 3\0" + bytes(84)),
    ):
        db = tmp / f"i22-db-{name}" / "tune" / "digits-lt-erm" / "study.db"
        db.parent.mkdir(parents=True)
        db.write_bytes(content)
    text = tmp / "i22-notes.txt"
    text.write_text("just some notes\n")
    (tmp / "i22-cell" / "digits-lt" / "erm" / "seed0").mkdir(parents=True)
    (tmp / "i22-cell" / "digits-lt" / "erm" / "seed0" / "config.yaml").symlink_to(text)
    (tmp / "i22-file").write_text("a file\n")
    (tmp / "i22-loop-a").symlink_to(tmp / "i22-loop-b")
    (tmp / "i22-loop-b").symlink_to(tmp / "i22-loop-a")
    (tmp / "i22-dangling").symlink_to(tmp / "i22-gone")
    pickled = tmp / "i22-list.pkl"
    pickled.write_bytes(pickle.dumps([1, 2, 3]))
    images = image_folder(tmp / "i22-images")
    folder = [
        "data.name=folder",
        f"data.root={images}",
        "data.profile=natural",
        "data.val_per_class=1",
        "data.test_per_class=1",
    ]
    tune = ["tune", "digits-lt", "--method", "erm", "--trials", "1", "--seeds", "1"]
    grid = ["reproduce", "--recipe", "digits-lt", "--methods", "erm", "--seeds", "1", "--root", str(tmp / "i22-cell")]
    train = ["train", *FAST]
    return [
        ("random-bytes study.db (m2m tune)", [*tune, "optim.lr=0.01:0.2", "--root", str(tmp / "i22-db-random"), *FAST]),
        ("header-only study.db (m2m tune)", [*tune, "optim.lr=0.01:0.2", "--root", str(tmp / "i22-db-header"), *FAST]),
        ("summary.json that is a list (m2m report)", ["report", str(copies["summary-list"]), "--no-figures"]),
        ("config.yaml that is a YAML list (m2m report)", ["report", str(copies["config-list"]), "--no-figures"]),
        ("a grid cell's config.yaml symlinked to text", [*grid, *FAST]),
        (
            "data.image_size=100000 (folder of 22 PNGs)",
            [*train, *folder, "data.image_size=100000", f"run.dir={tmp / 'i22-i'}"],
        ),
        ("m2m bench --device cuda on a CPU-only torch", ["bench", "--device", "cuda"]),
        ("run.dir naming an existing file", [*train, f"run.dir={tmp / 'i22-file'}"]),
        ("run.dir naming a symlink loop", [*train, f"run.dir={tmp / 'i22-loop-a'}"]),
        ("run.dir naming a dangling link", [*train, f"run.dir={tmp / 'i22-dangling'}"]),
        ("damaged summary.json on --resume", [*train, f"run.dir={copies['summary-cut']}", "--resume"]),
        ("no space left on device (2nd last.pt)", full_disk(tmp / "i22-full")),
        ("model.width=100000", [*train, "model.width=100000", f"run.dir={tmp / 'i22-w'}"]),
        (
            "model.hidden=[10000000000]",
            [*train, "model.name=mlp", "model.hidden=[10000000000]", f"run.dir={tmp / 'i22-h'}"],
        ),
        (
            "non-ASCII run.dir under an ASCII locale",
            in_subprocess([*train, f"run.dir={tmp / NON_ASCII}"], {**os.environ, **ASCII_LOCALE}),
        ),
        (
            "m2m.generator pointing at a pickled list",
            [*train, "method=m2m", f"m2m.generator={pickled}", f"run.dir={tmp / 'i22-g'}"],
        ),
        ("tune range LOW:HIGH with LOW = HIGH", [*tune, "optim.lr=0.1:0.1", "--root", str(tmp / "i22-t")]),
        ("m2m report on a finished run with a header-only log.csv", ["report", str(copies["log-header"])]),
        (".last.pt.*.tmp left by a kill in the first checkpoint write", killed_in_first_checkpoint(tmp / "i22-kill")),
    ]


def main_table() -> None:
    print("| bad input | exit | first line on stderr |")
    print("| --- | ---: | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        cases = [(" ".join(o), ["train", *FAST, f"run.dir={Path(tmp) / 'r'}", *o]) for o in KEY_CASES]
        cases += [("m2m bench " + " ".join(o), ["bench", *o]) for o in BENCH_CASES]
        cases += file_cases(Path(tmp))
        cases += link_cases(Path(tmp)) + tracebacks_and_unclear_cases(Path(tmp))
        DATASETS.register("int32-labels", labelled_blobs(np.int32))
        DATASETS.register("float-labels", labelled_blobs(np.float32))
        try:
            for what, argv in cases:
                code, line = argv() if callable(argv) else run(argv)
                print(f"| `{what}` | {code} | {line.replace(tmp, 'TMP').replace('|', '/')} |")
        finally:
            DATASETS.unregister("int32-labels")
            DATASETS.unregister("float-labels")


if __name__ == "__main__":
    main_table()
