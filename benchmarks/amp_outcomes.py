"""Does bf16 autocast change M2m's outcome?  Compare finished runs trained with ``train.amp=none`` and
``train.amp=bf16`` (issue: CPU speed by default).

Reads each run root written by ``m2m reproduce ... --root ROOT train.amp=...`` and prints one JSON line per
(root, method) with, over seeds, the mean and standard deviation of:

- ``acceptance``: accepted / translation slots over the run (``summary.json``);
- ``g_target_prob``, ``f_seed_prob``, ``f_target_prob``: g's probability of the target class and f's
  probabilities of the seed's and the target class on the accepted samples, averaged over the M2m epochs
  of ``log.csv`` weighted by each epoch's accepted count;
- ``test_bacc``: test balanced accuracy at the best validation epoch.

Then a Markdown table, and the per-seed differences bf16 - fp32 when exactly two roots are given.

    python benchmarks/amp_outcomes.py runs/outcome/digits-none runs/outcome/digits-bf16
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from pathlib import Path

PROBABILITIES = ("g_target_prob", "f_seed_prob", "f_target_prob")


def read_run(run_dir: Path) -> dict:
    summary = json.loads((run_dir / "summary.json").read_text())
    row = {"seed": summary["seed"], "amp": summary.get("amp"), "test_bacc": summary["test_at_best"]["bacc"]}
    m2m = summary.get("m2m") or {}
    row["acceptance"] = m2m.get("acceptance")
    with open(run_dir / "log.csv", newline="") as handle:
        epochs = [r for r in csv.DictReader(handle) if r.get("m2m_accepted")]
    accepted = [int(float(r["m2m_accepted"])) for r in epochs]
    for name in PROBABILITIES:
        pairs = [(n, float(r[f"m2m_{name}"])) for n, r in zip(accepted, epochs) if n and r[f"m2m_{name}"]]
        total = sum(n for n, _ in pairs)
        row[name] = sum(n * p for n, p in pairs) / total if total else None
    return row


def mean_std(values: list) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def collect(root: Path) -> dict[str, list[dict]]:
    runs: dict[str, list[dict]] = {}
    for summary in sorted(root.glob("*/*/seed*/summary.json")):
        if any(part.startswith(".") for part in summary.relative_to(root).parts):
            continue  # prefixes and generators
        runs.setdefault(summary.parent.parent.name, []).append(read_run(summary.parent))
    return runs


def fmt(mean: float | None, std: float | None, scale: float = 100.0, digits: int = 2) -> str:
    if mean is None:
        return "-"
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("roots", nargs="+", type=Path, help="run roots, e.g. runs/outcome/digits-none")
    args = parser.parse_args()
    results = {root: collect(root) for root in args.roots}
    table = [
        "| root | method | amp | seeds | acceptance % | g target p | f seed p | f target p | test bACC % |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for root, methods in results.items():
        for method, rows in methods.items():
            stats = {k: mean_std([r[k] for r in rows]) for k in ("acceptance", *PROBABILITIES, "test_bacc")}
            print(
                json.dumps(
                    {
                        "root": str(root),
                        "method": method,
                        "amp": rows[0]["amp"],
                        "seeds": [r["seed"] for r in rows],
                        "runs": rows,
                        **{k: {"mean": m, "std": s} for k, (m, s) in stats.items()},
                    }
                )
            )
            table.append(
                f"| {root.name} | {method} | {rows[0]['amp']} | {len(rows)} | "
                f"{fmt(*stats['acceptance'])} | "
                + " | ".join(fmt(*stats[k], scale=1.0, digits=3) for k in PROBABILITIES)
                + f" | {fmt(*stats['test_bacc'])} |"
            )
    print("\n".join(table))
    if len(args.roots) == 2:
        first, second = (results[root] for root in args.roots)
        for method in sorted(set(first) & set(second)):
            by_seed = {r["seed"]: r for r in first[method]}
            diffs = [
                (r["seed"], 100 * (r["test_bacc"] - by_seed[r["seed"]]["test_bacc"]))
                for r in second[method]
                if r["seed"] in by_seed
            ]
            print(
                f"{method}: test bACC {args.roots[1].name} - {args.roots[0].name} by seed: "
                + ", ".join(f"seed {s} {d:+.2f}" for s, d in diffs)
            )


if __name__ == "__main__":
    main()
