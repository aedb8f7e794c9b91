"""``m2m demo`` / ``make demo``: g, then ERM, DRS and M2m on digits-lt over several seeds.

Every run is an ordinary run directory under ``--root`` (default ``runs/demo``); finished runs are
reused, so a second ``make demo`` only prints the table.  The demo's recipe (ratio, schedule, M2m
knobs) is ``recipes/digits-lt.yaml``, chosen on the validation split only (see the README).
"""

from __future__ import annotations

import time
from typing import Dict, List, Optional, Sequence

from major2minor.config import load_config
from major2minor.pipeline import train
from major2minor.registry import METHODS, REBALANCERS
from major2minor.report import mean_std

DEMO_METHODS = ("erm", "drs", "m2m")


def _fmt(values: Sequence[float]) -> str:
    """mean ± sample std (ddof 1), in %, as ``m2m report`` prints it."""
    mean, std = mean_std([100 * v for v in values], ddof=1)
    return f"{mean:5.2f} ± {std:4.2f}" if std == std else f"{mean:5.2f}"


def _acceptance(summary: dict) -> Optional[float]:
    """The method's acceptance rate (M2m's), None for a method that generates nothing."""
    return REBALANCERS.get(summary["rebalance"]).acceptance(summary)


def run_demo(
    seeds: int = 3, root: str = "runs/demo", methods: Sequence[str] = DEMO_METHODS, overrides: Sequence[str] = ()
) -> Dict[str, List[dict]]:
    t0 = time.time()
    results: Dict[str, List[dict]] = {m: [] for m in methods}
    print(
        f"major2minor demo: digits-lt (scikit-learn's 8x8 digits, long-tailed), methods {', '.join(methods)}, "
        f"{seeds} seeds; runs in {root} (finished runs are reused)"
    )
    for seed in range(seeds):
        for method in methods:
            cfg = load_config(
                "digits-lt",
                [f"method={method}", f"train.seed={seed}", f"run.root={root}", "train.progress=none", *overrides],
            )
            t = time.time()
            summary = train(cfg, resume=True, log=None)
            results[method].append(summary)
            accepted = _acceptance(summary)
            extra = "" if accepted is None else f", acceptance {100 * accepted:.1f}%"
            print(
                f"  seed {seed} {method:<4} test bACC {100 * summary['test_at_best']['bacc']:.2f} "
                f"GM {100 * summary['test_at_best']['gm']:.2f}{extra} ({time.time() - t:.1f}s)"
            )
    counts = results[methods[0]][0]["train_counts"]
    print(
        f"\ntraining counts per class: {counts} (ratio {max(counts) / min(counts):.0f}); "
        f"test: 50 per class; test at the best-validation epoch; mean ± sample std over {seeds} seeds\n"
    )
    print("| Method | bACC (%) | GM (%) | M2m acceptance (%) |")
    print("| --- | --- | --- | --- |")
    for method in methods:
        rows = results[method]
        acc = "" if _acceptance(rows[0]) is None else _fmt([_acceptance(r) or 0.0 for r in rows])
        print(
            f"| {METHODS.get(method).label} | {_fmt([r['test_at_best']['bacc'] for r in rows])} "
            f"| {_fmt([r['test_at_best']['gm'] for r in rows])} | {acc} |"
        )
    print(f"\ndemo wall time {time.time() - t0:.0f}s")
    return results
