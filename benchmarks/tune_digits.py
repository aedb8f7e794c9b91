"""Choose the digits-lt demo's schedule and M2m knobs on the VALIDATION split only.

Each candidate runs on tuning seeds (100, 101, 102: not the demo's 0..2) and is scored by the mean
validation bACC at its best-validation epoch; test numbers are never read.  Prints JSON lines.

    python benchmarks/tune_digits.py --stage schedule
    python benchmarks/tune_digits.py --stage m2m --base "optim.lr=0.1 ..."
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time

import numpy as np

from major2minor.config import load_config
from major2minor.pipeline import train

SEEDS = (100, 101, 102)


def score(method: str, overrides, root: str) -> dict:
    vals = []
    acc = []
    for seed in SEEDS:
        cfg = load_config(
            "digits-lt",
            [f"method={method}", f"train.seed={seed}", f"run.root={root}", "train.progress=none", *overrides],
        )
        from major2minor.rundir import default_run_dir

        s = train(
            cfg, resume=True, log=None, run_dir=default_run_dir(cfg) / "_".join(o.replace("/", "_") for o in overrides)
        )
        vals.append(s["val_at_best"]["bacc"])
        if "m2m" in s:
            acc.append(s["m2m"]["acceptance"] or 0.0)
    return {
        "method": method,
        "overrides": list(overrides),
        "val_bacc": float(np.mean(vals)),
        "val_bacc_std": float(np.std(vals)),
        "acceptance": float(np.mean(acc)) if acc else None,
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--stage", choices=["schedule", "m2m"], required=True)
    p.add_argument("--base", default="", help="space-separated overrides applied to every candidate")
    p.add_argument("--root", default=None)
    args = p.parse_args()
    root = args.root or tempfile.mkdtemp(prefix="tune-digits-")
    base = args.base.split()
    t0 = time.time()
    if args.stage == "schedule":
        grid = [
            ["train.epochs=30", "train.deferred_epoch=20", "optim.milestones=[24,28]"],
            ["train.epochs=40", "train.deferred_epoch=30", "optim.milestones=[30,36]"],
            ["train.epochs=60", "train.deferred_epoch=45", "optim.milestones=[45,54]"],
        ]
        lrs = [["optim.lr=0.1"], ["optim.lr=0.05"]]
        for sched, lr in itertools.product(grid, lrs):
            for method in ("erm", "drs"):
                print(json.dumps(score(method, base + sched + lr, root)), flush=True)
    else:
        # beta 0.999 is left out: with at most 90 images a class, 1 - 0.999^(N_j - N_k) <= 0.09, so the
        # Bernoulli draw rejects > 90% of translations (measured: 0.25% acceptance).
        for beta, lam, gamma in itertools.product([0.9, 0.99], [0.1, 0.5], [0.5, 0.9]):
            o = base + [f"m2m.beta={beta}", f"m2m.lam={lam}", f"m2m.gamma={gamma}"]
            print(json.dumps(score("m2m", o, root)), flush=True)
    print(json.dumps({"wall_seconds": time.time() - t0, "root": root}))


if __name__ == "__main__":
    main()
