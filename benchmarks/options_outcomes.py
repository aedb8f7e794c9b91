"""Do the speed options change M2m's outcomes? Acceptance rate and test bACC on digits-lt over seeds.

    python benchmarks/options_outcomes.py [--seeds 3] [--root DIR]

Runs the digits-lt M2m recipe with each speed option switched off (and the public code's
translate-every-slot behaviour switched on) and prints JSON lines: mean ± std over seeds of the
acceptance rate and of test bACC at the best-validation epoch.  Differences should be noise.
"""
from __future__ import annotations

import argparse
import json
import tempfile

import numpy as np

from major2minor.config import load_config
from major2minor.engine import train

VARIANTS = {
    "defaults (channels-last, folded g, skip Bernoulli-rejected slots)": [],
    "channels_last=false": ["train.channels_last=false"],
    "fold_generator=false": ["m2m.fold_generator=false"],
    "translate_rejected=true": ["m2m.translate_rejected=true"],
}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--root", default=None)
    args = p.parse_args()
    root = args.root or tempfile.mkdtemp(prefix="m2m-options-")
    for name, overrides in VARIANTS.items():
        acc, bacc = [], []
        for seed in range(args.seeds):
            cfg = load_config("digits-lt", ["method=m2m", f"train.seed={seed}", f"run.root={root}",
                                            "train.progress=none", *overrides])
            run_dir = f"{root}/{name.split()[0]}/seed{seed}"
            s = train(cfg, resume=True, log=None, run_dir=run_dir)
            acc.append(s["m2m"]["acceptance"] or 0.0)
            bacc.append(s["test_at_best"]["bacc"])
        print(json.dumps({"variant": name, "seeds": args.seeds,
                          "acceptance_mean": float(np.mean(acc)), "acceptance_std": float(np.std(acc)),
                          "test_bacc_mean": float(np.mean(bacc)), "test_bacc_std": float(np.std(bacc)),
                          "acceptance": acc, "test_bacc": bacc}), flush=True)


if __name__ == "__main__":
    main()
