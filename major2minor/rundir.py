"""Run directories: where a run's config, manifest, versions, logs, checkpoints and summary live."""

from __future__ import annotations

import csv
import io
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

from major2minor._version import __version__
from major2minor.checkpoint import atomic_write_json, atomic_write_text
from major2minor.config import differing_settings


class RunDirError(RuntimeError):
    """A run directory that cannot be used as asked (exists already, or nothing to resume)."""


def default_run_dir(cfg) -> Path:
    if cfg.run.dir:
        return Path(cfg.run.dir)
    recipe = Path(cfg.recipe).stem
    return Path(cfg.run.root) / recipe / cfg.method / f"seed{cfg.train.seed}"


def prepare_run_dir(path: Path, resume: bool) -> str:
    """Return 'new', 'resume' or 'done'; refuse to overwrite an existing run silently."""
    finished = (path / "summary.json").exists()
    started = (path / "last.pt").exists() or (path / "last.prev.pt").exists()
    if finished:
        if resume:
            return "done"
        raise RunDirError(
            f"run directory {path} already holds a finished run; pass --resume to reuse its "
            "result, or choose another directory with run.dir=PATH."
        )
    if started:
        if resume:
            for leftover in path.glob(".*.tmp"):  # a write the crash interrupted (never renamed into place)
                leftover.unlink(missing_ok=True)
            for leftover in path.glob(".*.link"):
                leftover.unlink(missing_ok=True)
            return "resume"
        raise RunDirError(
            f"run directory {path} holds an unfinished run (last.pt); pass --resume to "
            "continue it, or choose another directory with run.dir=PATH."
        )
    if path.exists() and any(p.name not in ("config.yaml",) for p in path.iterdir()) and not resume:
        raise RunDirError(
            f"run directory {path} exists and is not empty (but holds no checkpoint: no epoch "
            "finished); pass --resume to start that run again there, or choose another "
            "directory with run.dir=PATH, or remove it."
        )
    path.mkdir(parents=True, exist_ok=True)
    return "new"


def check_resume_config(path: Path, saved: Optional[Dict[str, Any]], current: Dict[str, Any]) -> None:
    """Refuse to resume ``path`` with settings other than the ones it was started with.

    Settings that do not change results (:func:`major2minor.config.result_neutral_keys`: paths,
    device, threads, progress display) may differ: the user may resume on another machine.
    """
    if not saved:
        return
    differ = differing_settings(saved, current)
    if differ:
        shown = "; ".join(differ[:6])
        more = f" (and {len(differ) - 6} more)" if len(differ) > 6 else ""
        raise RunDirError(
            f"cannot resume {path}: it was started with different settings: {shown}{more}. "
            "Resume with the settings it was started with (see its config.yaml), or start "
            "a new run with run.dir=PATH."
        )


def git_commit() -> Optional[str]:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or None
    except Exception:
        return None


def environment() -> Dict[str, Any]:
    import numpy
    import sklearn
    import torch

    return {
        "major2minor": __version__,
        "git_commit": git_commit(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "scikit-learn": sklearn.__version__,
        "platform": platform.platform(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.version.cuda,
    }


def write_csv(path: Path, rows: List[Dict[str, Any]]) -> None:
    """Rewrite the whole per-epoch log atomically (it is small), so a crash never truncates it."""
    if not rows:
        return
    columns: List[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _fmt(row.get(k)) for k in columns})
    atomic_write_text(path, buf.getvalue())


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (list, tuple)):
        return " ".join(str(_fmt(x)) for x in v)
    return v


__all__ = [
    "RunDirError",
    "default_run_dir",
    "prepare_run_dir",
    "check_resume_config",
    "environment",
    "write_csv",
    "atomic_write_json",
    "atomic_write_text",
]
