"""Every bad input of the hardening review, fed to the real CLI: prints a Markdown table of the input, the
exit status and the first line the user reads (stderr), all before any training starts.

    python benchmarks/bad_inputs.py            # about a minute on a 2-core CPU

Files it needs (a garbled Twitter file, CSV/NPZ data, a broken recipe, a truncated log) are written to a
temporary folder in exactly their real formats; nothing outside it is touched.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path

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


def main_table() -> None:
    print("| bad input | exit | first line on stderr |")
    print("| --- | ---: | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        cases = [(" ".join(o), ["train", *FAST, f"run.dir={Path(tmp) / 'r'}", *o]) for o in KEY_CASES]
        cases += [("m2m bench " + " ".join(o), ["bench", *o]) for o in BENCH_CASES]
        cases += file_cases(Path(tmp))
        DATASETS.register("int32-labels", labelled_blobs(np.int32))
        DATASETS.register("float-labels", labelled_blobs(np.float32))
        try:
            for what, argv in cases:
                code, line = run(argv)
                print(f"| `{what}` | {code} | {line.replace(tmp, 'TMP').replace('|', '/')} |")
        finally:
            DATASETS.unregister("int32-labels")
            DATASETS.unregister("float-labels")


if __name__ == "__main__":
    main_table()
