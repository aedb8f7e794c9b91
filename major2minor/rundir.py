"""Run directories: where a run's config, manifest, versions, logs, checkpoints and summary live,
and the lock that keeps one writer per directory.

A run directory moves through three states: *new* (absent, or holding only the files a run writes
before its first epoch ends), *started* (``last.pt``: resume it) and *finished* (``summary.json``:
reuse it).  :func:`prepare_run_dir` decides which, and refuses what would lose or mix results: an
existing run without ``--resume``, and ``--resume`` on a folder that holds other files.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from filelock import FileLock, Timeout

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
    present = sorted(p.name for p in path.iterdir() if not _ours(p.name)) if path.exists() else []
    foreign = [name for name in present if name not in EARLY_RUN_FILES]
    if foreign:
        raise RunDirError(
            f"run directory {path} holds files that are not a run's ({', '.join(foreign[:4])}"
            f"{', ...' if len(foreign) > 4 else ''}); a run never trains into a folder with other files. "
            "Choose another directory with run.dir=PATH."
        )
    if [name for name in present if name != "config.yaml"] and not resume:
        raise RunDirError(
            f"run directory {path} exists and is not empty (but holds no checkpoint: no epoch "
            "finished); pass --resume to start that run again there, or choose another "
            "directory with run.dir=PATH, or remove it."
        )
    path.mkdir(parents=True, exist_ok=True)
    return "new"


#: What a run writes before its first last.pt (a crash then leaves these and no checkpoint).
EARLY_RUN_FILES = ("config.yaml", "manifest.json", "environment.json", "tb", "log.csv", "best.pt")


def _ours(name: str) -> bool:
    """The lock files and the temporary files of an interrupted atomic write."""
    return name.startswith(LOCK_NAME) or (name.startswith(".") and name.endswith((".tmp", ".link")))


LOCK_NAME = ".lock"  # the lock file; ".lock.owner" says who holds it
_HELD: Dict[Path, Tuple[FileLock, int]] = {}  # directories this process holds, with a re-entry count


class RunLock:
    """One writer per run directory: an advisory lock on ``RUN_DIR/.lock``, held while a run trains.

    The operating system's file lock (``fcntl`` / ``msvcrt``, through the filelock library) is released
    when its holder exits, even on SIGKILL, so a lock left by a dead process is simply taken over;
    ``.lock.owner`` names the holder (PID, host, start time) for the refusal message.  A second
    writer is refused at once (``wait=False``) or waits its turn (``wait=True``: M2m's generator
    cache, where the second grid then reuses the g the first one trained).  Re-entrant within one
    process.
    """

    def __init__(self, run_dir: Path, wait: bool = False, log: Optional[Callable[[str], None]] = None):
        self.run_dir = Path(run_dir)
        self.wait, self.log = wait, log or (lambda s: None)

    def __enter__(self) -> RunLock:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        key = self.run_dir.resolve()
        if key in _HELD:
            lock, count = _HELD[key]
            _HELD[key] = (lock, count + 1)
            return self
        lock = FileLock(str(self.run_dir / LOCK_NAME), thread_local=False)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            if not self.wait:
                raise RunDirError(
                    f"run directory {self.run_dir} is being written by another process ({self.owner()}); "
                    "one run directory has one writer. Wait for it to finish (then --resume reuses or "
                    "continues its run), or choose another directory with run.dir=PATH."
                ) from None
            self.log(f"{self.run_dir} is being written by another process ({self.owner()}); waiting for it")
            lock.acquire(timeout=-1)
        _HELD[key] = (lock, 1)
        (self.run_dir / f"{LOCK_NAME}.owner").write_text(
            json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")})
        )
        return self

    def owner(self) -> str:
        try:
            info = json.loads((self.run_dir / f"{LOCK_NAME}.owner").read_text())
            return f"PID {info['pid']} on {info['host']}, since {info['since']}"
        except (OSError, ValueError, KeyError):
            return "its PID is not recorded"

    def __exit__(self, *exc: Any) -> None:
        key = self.run_dir.resolve()
        lock, count = _HELD[key]
        if count > 1:
            _HELD[key] = (lock, count - 1)
            return
        del _HELD[key]
        (self.run_dir / f"{LOCK_NAME}.owner").unlink(missing_ok=True)
        lock.release()


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
