"""Every registered method preset on digits-lt with the recipe as shipped; a table of test bACC / GM.

Each (preset, seed) is one ``m2m train recipe=digits-lt method=NAME train.seed=S run.root=ROOT`` run
(done in-process here); the test split is read at the best-validation epoch (and the last epoch).
M2m presets train and cache their ERM generator g under ROOT/.generators first (once per seed).
Prints a markdown table (mean ± std over seeds) and then one JSON object with every run's numbers.

    python benchmarks/presets_digits.py                         # every preset, seeds 0,1,2
    python benchmarks/presets_digits.py --methods erm,drs,m2m --seeds 0 --root /tmp/presets
    python benchmarks/presets_digits.py --root /tmp/presets --reuse   # reuse finished runs under ROOT

Extra ``key=value`` arguments are passed to every run as overrides (e.g. ``train.epochs=10``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from typing import Dict, List

import numpy as np

from major2minor.config import load_config
from major2minor.pipeline import train
from major2minor.registry import METHODS


def fmt(values: List[float]) -> str:
    values = [100 * v for v in values]
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{np.mean(values):.1f} ± {np.std(values):.1f}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--methods", default=",".join(METHODS.names()), help="comma-separated presets (default: every registered one)"
    )
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--root", default=None, help="run.root (default: a new temporary directory)")
    p.add_argument("--reuse", action="store_true", help="reuse/resume runs already under --root")
    p.add_argument(
        "--threads", type=int, default=1, help="train.threads (default 1: fastest for these tiny nets on shared cores)"
    )
    p.add_argument("--json", default=None, help="also write the JSON to this file")
    p.add_argument("overrides", nargs="*", help="extra key=value overrides for every run")
    args = p.parse_args(argv)

    root = args.root or tempfile.mkdtemp(prefix="m2m-presets-")
    args.seeds = [int(x) for x in args.seeds.split(",") if x != ""]
    methods = [m for m in args.methods.split(",") if m]
    for m in methods:
        METHODS.get(m)  # fail early on a typo, listing valid names
    common = [f"run.root={root}", "train.progress=none", f"train.threads={args.threads}", *args.overrides]

    runs: List[Dict] = []
    t_all = time.time()
    for method in methods:
        for seed in args.seeds:
            cfg = load_config("digits-lt", [f"method={method}", f"train.seed={seed}", *common])
            t = time.time()
            s = train(cfg, resume=args.reuse, log=None)
            run = {
                "method": method,
                "seed": seed,
                "loss": cfg.loss.name,
                "rebalance": cfg.rebalance.name,
                "epochs": cfg.train.epochs,
                "deferred_epoch": cfg.train.deferred_epoch,
                "best_epoch": s["best_epoch"],
                "test_bacc": s["test_at_best"]["bacc"],
                "test_gm": s["test_at_best"]["gm"],
                "val_bacc": s["val_at_best"]["bacc"],
                "test_bacc_last": s["test_at_last"]["bacc"],
                "test_gm_last": s["test_at_last"]["gm"],
                "seconds": time.time() - t,
                "run_dir": s["run_dir"],
            }
            if "m2m" in s:
                run["m2m_acceptance"] = s["m2m"]["acceptance"]
            runs.append(run)
            print(
                f"{method:<17} seed {seed}: test bACC {run['test_bacc']:.4f} GM {run['test_gm']:.4f} "
                f"(best-val epoch {run['best_epoch'] + 1}/{run['epochs']}, {run['seconds']:.1f}s)",
                file=sys.stderr,
                flush=True,
            )

    cfg0 = load_config("digits-lt", common)
    lines = [
        f"digits-lt (n_max {cfg0.data.n_max}, ratio {cfg0.data.ratio:g}), {cfg0.train.epochs} epochs, "
        f"T0 = {cfg0.train.deferred_epoch}, seeds {' '.join(map(str, args.seeds))}; test split at the "
        "best-validation epoch (mean ± std over seeds, %)",
        "",
        "| method | loss | re-balancing | test bACC | test GM | val bACC | last-epoch bACC | s/run |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    table = []
    for method in methods:
        rs = [r for r in runs if r["method"] == method]
        row = {k: [r[k] for r in rs] for k in ("test_bacc", "test_gm", "val_bacc", "test_bacc_last", "seconds")}
        table.append(
            {
                "method": method,
                "loss": rs[0]["loss"],
                "rebalance": rs[0]["rebalance"],
                **{f"{k}_mean": float(np.mean(v)) for k, v in row.items()},
                **{f"{k}_std": float(np.std(v)) for k, v in row.items()},
            }
        )
        lines.append(
            f"| {method} | {rs[0]['loss']} | {rs[0]['rebalance']} | {fmt(row['test_bacc'])} | "
            f"{fmt(row['test_gm'])} | {fmt(row['val_bacc'])} | {fmt(row['test_bacc_last'])} | "
            f"{np.mean(row['seconds']):.1f} |"
        )
    print("\n".join(lines))
    out = {
        "recipe": "digits-lt",
        "root": root,
        "seeds": args.seeds,
        "overrides": args.overrides,
        "threads": args.threads,
        "total_seconds": time.time() - t_all,
        "table": table,
        "runs": runs,
    }
    text = json.dumps(out, indent=1)
    print(text)
    if args.json:
        with open(args.json, "w") as fh:
            fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
