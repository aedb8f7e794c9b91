"""What the reported-epoch rule changes: for every method of a finished grid, test bACC / GM at the epoch
chosen from T0 on (``train.select=from_t0``, the default) and at the whole-run best validation epoch (the
earlier rule, ``train.select=all``), from the same runs: each summary.json records both.

    python tools/selection_rule.py runs/paper/reuters          # prints a Markdown table

Mean ± sample std over the seeds found, in %; "epochs" lists each seed's reported epoch (and, where it
differs, the whole-run best epoch in brackets).
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

from major2minor.report import collect_runs, mean_std


def rows(folder: Path) -> list[str]:
    by_method = defaultdict(list)
    for run in collect_runs([folder]):
        by_method[run.method].append(run.summary)
    out = [
        "| method | bACC from T0 | bACC whole run | GM from T0 | GM whole run | epochs (whole-run best) |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for method, summaries in by_method.items():
        cells = []
        for metric in ("bacc", "gm"):
            for key in ("test_at_best", "overall"):
                vals = [100 * _at(s, key)[metric] for s in summaries]
                m, sd = mean_std(vals)
                cells.append(f"{m:.2f} ± {sd:.2f}")
        epochs = ", ".join(_epochs(s) for s in summaries)
        out.append(f"| {method} | {cells[0]} | {cells[1]} | {cells[2]} | {cells[3]} | {epochs} |")
    return out


def _at(summary: dict, key: str) -> dict:
    if key == "test_at_best":
        return summary["test_at_best"]
    return summary.get("selection", {}).get("test_at_overall_best") or summary["test_at_best"]


def _epochs(summary: dict) -> str:
    best, overall = summary["best_epoch"], summary.get("selection", {}).get("overall_best_epoch", summary["best_epoch"])
    return str(best) if best == overall else f"{best} ({overall})"


if __name__ == "__main__":
    for folder in sys.argv[1:] or ["runs"]:
        print(f"\n{folder}\n")
        print("\n".join(rows(Path(folder))))
