"""Do the speed options change M2m's outcomes? Acceptance rate and test bACC on digits-lt over seeds.

    python benchmarks/options_outcomes.py [--seeds 3] [--root DIR]

Runs the digits-lt M2m recipe with each speed option switched off (and the public code's
translate-every-slot behaviour switched on) and prints JSON lines: mean ± std over seeds of the
acceptance rate and of test bACC at the best-validation epoch.  Differences should be noise.
Each variant runs in its own process: the flush-to-zero mode is a per-thread CPU setting that
threads inherit when they start, so it cannot be switched back and forth inside one process.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

import numpy as np

from major2minor.config import load_config
from major2minor.pipeline import train

VARIANTS = {
    "defaults (channels-last, folded g and f, flush-to-zero, skip Bernoulli-rejected slots)": [],
    "channels_last=false": ["train.channels_last=false"],
    "fold_generator=false": ["m2m.fold_generator=false"],
    "fold_classifier=false": ["m2m.fold_classifier=false"],
    "flush_denormal=false": ["train.flush_denormal=false"],
    "translate_rejected=true": ["m2m.translate_rejected=true"],
}


def run_variant(name: str, seeds: int, root: str) -> dict:
    overrides = VARIANTS[name]
    acc, bacc = [], []
    for seed in range(seeds):
        cfg = load_config(
            "digits-lt", ["method=m2m", f"train.seed={seed}", f"run.root={root}", "train.progress=none", *overrides]
        )
        run_dir = f"{root}/{name.split()[0]}/seed{seed}"
        cfg.run.dir = str(run_dir)
        s = train(cfg, resume=True, log=None)
        acc.append(s["m2m"]["acceptance"] or 0.0)
        bacc.append(s["test_at_best"]["bacc"])
    return {
        "variant": name,
        "seeds": seeds,
        "acceptance_mean": float(np.mean(acc)),
        "acceptance_std": float(np.std(acc)),
        "test_bacc_mean": float(np.mean(bacc)),
        "test_bacc_std": float(np.std(bacc)),
        "acceptance": acc,
        "test_bacc": bacc,
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--root", default=None)
    p.add_argument("--one", default=None, choices=list(VARIANTS), help=argparse.SUPPRESS)
    args = p.parse_args()
    root = args.root or tempfile.mkdtemp(prefix="m2m-options-")
    if args.one is not None:
        print(json.dumps(run_variant(args.one, args.seeds, root)), flush=True)
        return
    for name in VARIANTS:  # a fresh process per variant (see the module notes)
        subprocess.run(
            [sys.executable, __file__, "--one", name, "--seeds", str(args.seeds), "--root", root], check=True
        )


if __name__ == "__main__":
    main()
