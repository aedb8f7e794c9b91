"""Run directories: where a run's config, manifest, versions, logs, checkpoints and summary live,
and the lock that keeps one writer per directory.

A run directory moves through three states: *new* (absent, or holding only the files a run writes
before its first epoch ends), *started* (``last.pt``: resume it) and *finished* (``summary.json``:
reuse it).  :func:`prepare_run_dir` decides which, and refuses what would lose or mix results: an
existing run without ``--resume``, and ``--resume`` on a folder that holds other files.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from filelock import FileLock, Timeout

from major2minor._version import __version__
from major2minor.checkpoint import (
    CheckpointError,
    atomic_write_json,
    atomic_write_text,
    load_checkpoint,
    save_checkpoint,
)
from major2minor.config import differing_settings, read_yaml


class RunDirError(RuntimeError):
    """A run directory that cannot be used as asked (exists already, or nothing to resume)."""


class RunDirBusy(RunDirError):
    """The run directory is being written by another process (:class:`RunLock` with ``wait=False``)."""


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
            _remove_leftovers(path)
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
    _remove_leftovers(path)  # a kill inside the first checkpoint's write leaves its .last.pt.*.tmp
    return "new"


def _remove_leftovers(path: Path) -> None:
    """The temporary files of writes a crash interrupted (never renamed into place); we hold the lock."""
    for pattern in (".*.tmp", ".*.link"):
        for leftover in path.glob(pattern):
            leftover.unlink(missing_ok=True)


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
        check_dir_path(self.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        key = self.run_dir.resolve()
        if key in _HELD:
            lock, count = _HELD[key]
            _HELD[key] = (lock, count + 1)
            return self
        for name in (LOCK_NAME, f"{LOCK_NAME}.owner"):
            refuse_link(self.run_dir / name, "the run directory's lock file")
        lock = FileLock(str(self.run_dir / LOCK_NAME), thread_local=False)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            if not self.wait:
                raise RunDirBusy(
                    f"run directory {self.run_dir} is being written by another process ({self.owner()}); "
                    "one run directory has one writer. Wait for it to finish (then --resume reuses or "
                    "continues its run), or choose another directory with run.dir=PATH."
                ) from None
            self.log(f"{self.run_dir} is being written by another process ({self.owner()}); waiting for it")
            lock.acquire(timeout=-1)
        _HELD[key] = (lock, 1)
        # written to a new file renamed into place: a link planted after the check above is replaced, never
        # written through (open() would follow it and overwrite the file it points to)
        atomic_write_text(
            self.run_dir / f"{LOCK_NAME}.owner",
            json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}),
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


def _link_target(path: Path) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "?"


def refuse_link(path: Path, what: str) -> None:
    """Refuse a symbolic link where ``what`` (a file major2minor writes or copies) should be: writing through it
    would overwrite the file it points to, copying from it would bring that file in, possibly from outside the
    run directory."""
    if path.is_symlink():
        raise RunDirError(
            f"{path} is a symbolic link (to {_link_target(path)}) where {what} should be; major2minor never follows "
            "a link there (it could overwrite or copy a file outside the run directory). Remove the link and run again."
        )


def read_run_config(path: Path, fix: str) -> Optional[Dict[str, Any]]:
    """A run's ``config.yaml`` (None when absent); one that does not hold a mapping of settings (a YAML list,
    text, a link to another file) is refused naming it, the link and ``fix``."""
    if not path.exists():
        return None
    config = read_yaml(path, "run configuration")
    if config is not None and not isinstance(config, dict):
        link = f" (a symbolic link to {_link_target(path)})" if path.is_symlink() else ""
        shown = "text" if isinstance(config, str) else f"a YAML {type(config).__name__}"
        raise RunDirError(
            f"run configuration {path}{link} holds {shown}, not the mapping of settings a run writes "
            f"('section:' lines with 'key: value' entries); it was replaced or edited: {fix}."
        )
    return config


def check_dir_path(path: Path) -> None:
    """Refuse a run directory that names a file, a dangling symbolic link or a link loop, saying which, before
    ``mkdir`` fails on it with a bare "[Errno 17] File exists"."""
    fix = "choose another directory with run.dir=PATH (or --root DIR)"
    try:
        os.stat(path)
    except FileNotFoundError:
        if path.is_symlink():
            raise RunDirError(
                f"run directory {path} is a symbolic link to {_link_target(path)}, which does not exist (a "
                f"dangling link); remove the link or point it at a folder, or {fix}."
            ) from None
        return  # absent: it is made
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise RunDirError(
                f"run directory {path} is a symbolic link that loops ({path} -> {_link_target(path)} -> ...; it "
                f"never reaches a folder); remove the link, or {fix}."
            ) from None
        if exc.errno == errno.ENOTDIR:
            parent = next((p for p in reversed(path.parents) if p.exists() and not p.is_dir()), path.parent)
            raise RunDirError(f"run directory {path} cannot be made: {parent} is a file, not a folder; {fix}.") from exc
        raise
    if not path.is_dir():
        raise RunDirError(f"run directory {path} is a file, not a folder; move the file away, or {fix}.")


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


def sha256_of(path: Path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def seal_finished(run_dir: Path, summary_text: str, manifest: Dict[str, Any], generators: List[Dict[str, Any]]) -> None:
    """Record, inside the checksummed ``last.pt``, what the finished run's files must hold: the SHA-256 of
    ``summary.json`` (``summary_text``, written next) and of ``config.yaml``, the data manifest and the g's
    it used.  Reuse (:func:`verify_finished`) and ``m2m report`` compare against it, so an edited summary
    or config, or other data, is refused instead of being passed off as this run's result.

    Written before ``summary.json``: a crash in between leaves a run that resumes at its last epoch and
    writes (and seals) its summary again.
    """
    import hashlib

    ckpt = load_checkpoint(run_dir / "last.pt")
    ckpt["finished"] = {
        "summary_sha256": hashlib.sha256(summary_text.encode("utf-8")).hexdigest(),
        "config_sha256": sha256_of(run_dir / "config.yaml"),
        "manifest": {k: manifest.get(k) for k in ("checksum", "class_names")},
        "generators": generators,
    }
    save_checkpoint(ckpt, run_dir / "last.pt")


class UnsealedRunError(RunDirError):
    """A finished run without the record :func:`seal_finished` writes (finished by an earlier version)."""


def _refuse(run_dir: Path, what: str, fix: str, kind: type = RunDirError) -> RunDirError:
    return kind(f"the finished run in {run_dir} cannot be used: {what}. {fix}")


_NEW_RUN = "Start a new run with run.dir=PATH (or another --root), or remove that folder to train it again."


def read_seal(run_dir: Path) -> Dict[str, Any]:
    """The finished run's ``last.pt`` and its seal (see :func:`seal_finished`); refused when missing or damaged."""
    try:
        ckpt = load_checkpoint(run_dir / "last.pt")
    except CheckpointError as exc:
        raise _refuse(run_dir, f"its last.pt cannot be read to verify it ({exc.reason or exc})", _NEW_RUN) from None
    seal = ckpt.get("finished") if isinstance(ckpt, dict) else None
    if not isinstance(seal, dict):
        raise _refuse(
            run_dir,
            "it has no record of its finished files (it was finished by an earlier version of major2minor, or "
            "its last.pt was replaced), so its summary cannot be verified",
            _NEW_RUN,
            UnsealedRunError,
        )
    return {"config": ckpt.get("config"), **seal}


def verify_finished(
    run_dir: Path,
    config: Optional[Dict[str, Any]] = None,
    manifest: Optional[Dict[str, Any]] = None,
    generators: Sequence[str] = (),
) -> Dict[str, Any]:
    """The summary of the finished run in ``run_dir``, once it is shown to be the result asked for: its
    summary.json and config.yaml are as the run wrote them, it was trained with ``config``'s result-deciding
    settings, on the data of ``manifest`` and, when given, with the g's at ``generators`` (each ``None``
    skips that check).  Raises :class:`RunDirError` naming what differs."""
    seal = read_seal(run_dir)
    for name, key in (("config.yaml", "config_sha256"), ("summary.json", "summary_sha256")):
        if not (run_dir / name).is_file() or sha256_of(run_dir / name) != seal[key]:
            raise _refuse(
                run_dir, f"its {name} is not the one the run wrote (edited or replaced after it finished)", _NEW_RUN
            )
    if config is not None:
        differ = differing_settings(seal["config"] or {}, config)
        if differ:
            shown = "; ".join(differ[:6]) + (f" (and {len(differ) - 6} more)" if len(differ) > 6 else "")
            raise _refuse(run_dir, f"it was trained with other settings: {shown}", _NEW_RUN)
    if manifest is not None:
        _check_same_data(run_dir, seal["manifest"], manifest)
    if generators:
        _check_same_generators(run_dir, seal.get("generators") or [], generators)
    summary = json.loads((run_dir / "summary.json").read_text())
    if not isinstance(summary, dict):
        raise _refuse(run_dir, "its summary.json does not hold a run summary", _NEW_RUN)
    return summary


def data_changes(recorded: Dict[str, Any], manifest: Dict[str, Any]) -> List[str]:
    """How the data of ``manifest`` differs from the ``recorded`` one (checksum, class names); [] when the same."""
    changes = []
    if recorded.get("checksum") != manifest.get("checksum"):
        there, now = str(recorded.get("checksum"))[:12], str(manifest.get("checksum"))[:12]
        changes.append(f"data checksum {there}... there, {now}... now")
    if recorded.get("class_names") != manifest.get("class_names"):
        there, now = recorded.get("class_names"), manifest.get("class_names")
        changes.append(f"class names {there!r:.80} there, {now!r:.80} now")
    return changes


def _check_same_data(run_dir: Path, recorded: Dict[str, Any], manifest: Dict[str, Any]) -> None:
    changes = data_changes(recorded, manifest)
    if changes:
        raise _refuse(run_dir, f"it was trained on other data ({'; '.join(changes)})", _NEW_RUN)


def _check_same_generators(run_dir: Path, recorded: List[Dict[str, Any]], wanted: Sequence[str]) -> None:
    from major2minor.methods.generator import checkpoint_file

    now = [sha256_of(checkpoint_file(Path(p))) for p in wanted]
    there = [g.get("sha256") for g in recorded]
    if now != there:
        raise _refuse(
            run_dir,
            f"its M2m generator g differs from the one asked for ({[str(g.get('path')) for g in recorded]} there, "
            f"{[str(p) for p in wanted]} now)",
            _NEW_RUN,
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
    "RunDirBusy",
    "check_dir_path",
    "refuse_link",
    "default_run_dir",
    "prepare_run_dir",
    "check_resume_config",
    "seal_finished",
    "UnsealedRunError",
    "verify_finished",
    "environment",
    "write_csv",
    "atomic_write_json",
    "atomic_write_text",
]
