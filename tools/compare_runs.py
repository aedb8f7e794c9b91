"""Compare two trees of run directories bit for bit (a refactor must not change any result).

    python tools/compare_runs.py runs/before runs/after

For every run directory (a folder with ``summary.json``) found under the first root, the run at the
same relative path under the second root must have:

* the same ``summary.json`` apart from timings and paths (``*_seconds``, ``run_dir``, ``device_name``, and a g's
  ``path``, ``file`` and ``sha256``: the file holds its own run paths; the g runs are compared as runs);
* the same ``log.csv`` apart from the timing columns (``epoch_seconds``, ``m2m_seconds``);
* bit-identical model weights in ``best.pt`` and ``last.pt`` (every tensor of the ``model`` entry).

Cached generators (``.generators/<recipe>-<hash>/seedN``) are matched by recipe and seed.

Prints one JSON line per run and a final line ``{"identical": true/false, "runs": N}``; exits 1 on
any difference.  Checkpoints are read with ``weights_only=True``.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any, Dict, List

import torch

TIMING_KEYS = ("wall_seconds", "train_seconds", "translation_seconds", "epoch_seconds", "m2m_seconds", "seconds")
# where a run lives (and, in summary.json's "generators", where its g lives and the checksum of g's file, which
# holds g's own run paths): the g's are compared as runs of their own (their weights, bit for bit)
PATH_KEYS = ("run_dir", "device_name", "path", "file", "sha256")


def _strip(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in TIMING_KEYS and k not in PATH_KEYS}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def _log_rows(path: Path) -> List[Dict[str, str]]:
    with open(path, newline="") as fh:
        return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in csv.DictReader(fh)]


def _weights(path: Path) -> Dict[str, torch.Tensor]:
    obj = torch.load(path, map_location="cpu", weights_only=True)
    return obj["model"]


def counterpart(second: Path, rel: Path) -> Path:
    """The run at ``rel`` under ``second``; cached generators are matched by recipe and seed, since the
    settings hash in ``.generators/<recipe>-<hash>`` may change with the cache-key definition."""
    parts = rel.parts
    if ".generators" in parts:
        i = parts.index(".generators")
        recipe = parts[i + 1].rsplit("-", 1)[0]
        matches = sorted((second / Path(*parts[: i + 1])).glob(f"{recipe}-*/{parts[i + 2]}"))
        if len(matches) == 1:
            return matches[0]
    return second / rel


def compare_run(a: Path, b: Path) -> List[str]:
    diffs = []
    if not (b / "summary.json").exists():
        return [f"{b} has no summary.json"]
    sa, sb = (_strip(json.loads((d / "summary.json").read_text())) for d in (a, b))
    for key in sorted(set(sa) | set(sb)):
        if sa.get(key) != sb.get(key):
            diffs.append(f"summary.{key}")
    if _log_rows(a / "log.csv") != _log_rows(b / "log.csv"):
        diffs.append("log.csv")
    for name in ("best.pt", "last.pt"):
        if not (a / name).exists():
            continue
        wa, wb = _weights(a / name), _weights(b / name)
        if set(wa) != set(wb) or any(not torch.equal(wa[k], wb[k]) for k in wa):
            diffs.append(f"{name} weights")
    return diffs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("first")
    p.add_argument("second")
    args = p.parse_args(argv)
    first, second = Path(args.first), Path(args.second)
    runs = sorted(s.parent for s in first.rglob("summary.json"))
    ok = True
    for run in runs:
        rel = run.relative_to(first)
        diffs = compare_run(run, counterpart(second, rel))
        ok &= not diffs
        summary = json.loads((run / "summary.json").read_text())
        print(
            json.dumps(
                {
                    "run": str(rel),
                    "identical": not diffs,
                    "differences": diffs,
                    "test_bacc_at_best": summary["test_at_best"]["bacc"],
                }
            )
        )
    print(json.dumps({"identical": ok and bool(runs), "runs": len(runs)}))
    return 0 if ok and runs else 1


if __name__ == "__main__":
    sys.exit(main())
