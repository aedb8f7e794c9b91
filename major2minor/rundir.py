"""Run directories: where a run's config, manifest, versions, logs, checkpoints and summary live,
and the lock that keeps one writer per directory.  :class:`RunDir` owns every file name and format;
:class:`TrainingCheckpoint` declares what ``best.pt`` / ``last.pt`` hold.

A run directory moves through three states: *new* (absent, or holding only the files a run writes
before its first epoch ends), *started* (``last.pt``: resume it) and *finished* (``summary.json``:
reuse it).  :func:`prepare_run_dir` decides which, and refuses what would lose or mix results: an
existing run without ``--resume``, and ``--resume`` on a folder that holds other files.
"""

from __future__ import annotations

import errno
import json
import os
import platform
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from filelock import FileLock, Timeout

from major2minor import figures
from major2minor._version import __version__
from major2minor.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from major2minor.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_resume_checkpoint,
    save_checkpoint,
)
from major2minor.config import differing_settings, read_yaml
from major2minor.runlog import LogRows, read_log, write_log


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
    finished = (path / RunDir.SUMMARY).exists()
    started = (path / RunDir.LAST).exists() or (path / RunDir.LAST_PREV).exists()
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
    foreign = [name for name in present if name not in RunDir.EARLY]
    if foreign:
        raise RunDirError(
            f"run directory {path} holds files that are not a run's ({', '.join(foreign[:4])}"
            f"{', ...' if len(foreign) > 4 else ''}); a run never trains into a folder with other files. "
            "Choose another directory with run.dir=PATH."
        )
    if [name for name in present if name != RunDir.CONFIG] and not resume:
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

    ckpt = load_checkpoint(run_dir / RunDir.LAST)
    ckpt["finished"] = {
        "summary_sha256": hashlib.sha256(summary_text.encode("utf-8")).hexdigest(),
        "config_sha256": sha256_of(run_dir / RunDir.CONFIG),
        "manifest": {k: manifest.get(k) for k in ("checksum", "class_names")},
        "generators": generators,
    }
    save_checkpoint(ckpt, run_dir / RunDir.LAST)


class UnsealedRunError(RunDirError):
    """A finished run without the record :func:`seal_finished` writes (finished by an earlier version)."""


def _refuse(run_dir: Path, what: str, fix: str, kind: type = RunDirError) -> RunDirError:
    return kind(f"the finished run in {run_dir} cannot be used: {what}. {fix}")


_NEW_RUN = "Start a new run with run.dir=PATH (or another --root), or remove that folder to train it again."


def read_seal(run_dir: Path) -> Dict[str, Any]:
    """The finished run's ``last.pt`` and its seal (see :func:`seal_finished`); refused when missing or damaged."""
    try:
        ckpt = load_checkpoint(run_dir / RunDir.LAST)
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
    for name, key in ((RunDir.CONFIG, "config_sha256"), (RunDir.SUMMARY, "summary_sha256")):
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
    summary = json.loads((run_dir / RunDir.SUMMARY).read_text())
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


@dataclass
class TrainingCheckpoint:
    """What ``best.pt`` and ``last.pt`` hold (a plain dict on disk, loaded with ``weights_only=True``)."""

    model: Dict[str, Any]  # f's state_dict
    optimizer: Dict[str, Any]  # SGD's state_dict (momentum buffers)
    epoch: int  # the epoch just finished, 0-based
    state: Dict[str, Any]  # the loop's state (engine.TrainState as a dict): next epoch, bests, history
    rng: Dict[str, Any]  # {"sample": sampling generator state, "augment": rank 0's augmentation state}
    rebalancer: Dict[str, Any]  # the method's own state (M2m: its generator), rank 0
    per_rank: List[Dict[str, Any]]  # [{"augment": ..., "rebalancer": ...}] for every rank under torchrun
    counts: List[int]  # training samples per class
    num_classes: int
    model_name: str
    config: Dict[str, Any]  # the resolved configuration (Config.to_dict())
    kind: Optional[str] = None  # "best" in best.pt
    finished: Optional[Dict[str, Any]] = None  # the seal of a finished run (RunDir.seal), in last.pt

    def to_dict(self) -> Dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None or k not in ("kind", "finished")}

    @classmethod
    def from_dict(cls, obj: Dict[str, Any]) -> TrainingCheckpoint:
        """A checkpoint of ours; missing entries of earlier versions get their old meaning (rank 0 only)."""
        obj = dict(obj)
        obj.setdefault("rebalancer", {})
        obj.setdefault("per_rank", [{"augment": obj["rng"]["augment"], "rebalancer": obj["rebalancer"]}])
        for key in ("counts", "num_classes", "model_name", "config", "kind", "finished"):
            obj.setdefault(key, None)
        return cls(**{k: obj[k] for k in cls.__dataclass_fields__})


class RunDir:
    """One run's directory: every file a run reads or writes, by name and format, and its lock.

    ====================  =====================================================================
    ``config.yaml``       the resolved configuration (:meth:`write_config`, :meth:`read_config`)
    ``manifest.json``     the data: split sizes, per-class counts, checksum, class names
    ``environment.json``  versions, git commit, threads, amp and why
    ``log.csv``           one row per epoch (:mod:`major2minor.runlog`)
    ``summary.json``      the result (:meth:`read_summary`), written last; sealed in ``last.pt``
    ``best.pt``           the best-validation checkpoint (:class:`TrainingCheckpoint`, ``kind="best"``)
    ``last.pt``           the latest checkpoint; ``last.prev.pt`` the one before (kept until the end)
    ``*.png``, ``tb/``    figures (:meth:`write_figures`), TensorBoard events
    ``.lock``             the writer's lock; ``.lock.owner`` names its holder (:class:`RunLock`)
    ====================  =====================================================================

    ``RunDir.of(cfg)`` is where ``cfg`` runs: ``run.dir``, else ``RUN_ROOT/RECIPE/METHOD/seedN``.
    """

    CONFIG, MANIFEST, ENVIRONMENT = "config.yaml", "manifest.json", "environment.json"
    LOG, SUMMARY = "log.csv", "summary.json"
    BEST, LAST, LAST_PREV = "best.pt", "last.pt", "last.prev.pt"
    #: what a run writes before its first last.pt (a crash then leaves these and no checkpoint)
    EARLY = (CONFIG, MANIFEST, ENVIRONMENT, "tb", LOG, BEST)
    CURVES = "curves.png"

    def __init__(self, path: Union[str, os.PathLike]):
        self.path = Path(path)

    @classmethod
    def of(cls, cfg) -> RunDir:
        return cls(default_run_dir(cfg))

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, RunDir) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)

    # -- state and lock -------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return (self.path / self.SUMMARY).exists()

    @property
    def started(self) -> bool:
        return (self.path / self.LAST).exists() or (self.path / self.LAST_PREV).exists()

    def prepare(self, resume: bool) -> str:
        """'new', 'resume' or 'done' (see :func:`prepare_run_dir`)."""
        return prepare_run_dir(self.path, resume)

    def lock(self, wait: bool = False, log: Optional[Callable[[str], None]] = None) -> RunLock:
        return RunLock(self.path, wait=wait, log=log)

    def progress(self) -> str:
        """``"epoch E of N"`` for a run that has started (from log.csv and config.yaml), ``?`` where unreadable."""
        try:
            epochs = ((self.read_config("skip it") or {}).get("train") or {}).get("epochs", "?")
        except (OSError, ValueError, RunDirError):
            epochs = "?"
        try:
            log = self.path / self.LOG
            done = max(len(log.read_text().splitlines()) - 1, 0) if log.exists() else 0
        except OSError:
            done = "?"
        return f"epoch {done} of {epochs}"

    # -- readers --------------------------------------------------------------------------------

    def read_config(self, fix: str = "re-run that run or remove its directory") -> Optional[Dict[str, Any]]:
        return read_run_config(self.path / self.CONFIG, fix)

    def read_manifest(self) -> Optional[Dict[str, Any]]:
        path = self.path / self.MANIFEST
        return json.loads(path.read_text()) if path.exists() else None

    def read_summary(self) -> Any:
        return json.loads((self.path / self.SUMMARY).read_text())

    def read_log(self) -> LogRows:
        return read_log(self.path / self.LOG)

    def read_checkpoint(self, name: str) -> TrainingCheckpoint:
        return TrainingCheckpoint.from_dict(load_checkpoint(self.path / name))

    def read_resume_checkpoint(self, log: Optional[Callable[[str], None]] = None) -> TrainingCheckpoint:
        """``last.pt``, or ``last.prev.pt`` when it is unreadable (see :func:`load_resume_checkpoint`)."""
        ckpt, _ = load_resume_checkpoint(self.path, log)
        return TrainingCheckpoint.from_dict(ckpt)

    # -- writers (rank 0 only; every write is atomic) --------------------------------------------

    def write_config(self, cfg) -> None:
        atomic_write_text(self.path / self.CONFIG, cfg.to_yaml())

    def write_manifest(self, manifest: Dict[str, Any]) -> None:
        atomic_write_json(self.path / self.MANIFEST, manifest)

    def write_environment(self, extra: Dict[str, Any]) -> None:
        atomic_write_json(self.path / self.ENVIRONMENT, {**environment(), **extra})

    def write_log(self, rows: LogRows) -> None:
        write_log(self.path / self.LOG, rows)

    def write_summary(self, text: str) -> None:
        atomic_write_text(self.path / self.SUMMARY, text)

    def save_checkpoint(self, ckpt: TrainingCheckpoint, name: str, keep_previous: bool = False) -> None:
        save_checkpoint(ckpt.to_dict(), self.path / name, keep_previous=keep_previous)

    def copy_files_from(self, other: RunDir, names: Sequence[str], check: Sequence[str] = ()) -> None:
        """Copy ``names`` from ``other`` (a shared prefix) atomically; a link planted among ``names`` or
        ``check`` in ``other`` is refused, never followed (it would copy a file from outside the root)."""
        for name in (*names, *check):
            refuse_link(other / name, f"the shared prefix's {name}")
        for name in names:
            atomic_write_bytes(self.path / name, (other / name).read_bytes())

    def drop_previous(self) -> None:
        """A finished run resumes from nothing: its ``last.prev.pt`` goes."""
        (self.path / self.LAST_PREV).unlink(missing_ok=True)

    def seal(self, summary_text: str, manifest: Dict[str, Any], generators: List[Dict[str, Any]]) -> None:
        seal_finished(self.path, summary_text, manifest, generators)

    def verify(self, config=None, manifest=None, generators: Sequence[str] = ()) -> Dict[str, Any]:
        return verify_finished(self.path, config, manifest, generators)

    def write_figures(self, log: Optional[Callable[[str], None]] = None, missing_ok: bool = True) -> List[Path]:
        return write_run_figures(self.path, log=log, missing_ok=missing_ok)

    def has_figures(self) -> bool:
        return (self.path / self.CURVES).exists()


def write_run_figures(
    run_dir: Union[str, os.PathLike], log: Optional[Callable[[str], None]] = None, missing_ok: bool = True
) -> List[Path]:
    """Write a run's figures into its directory from its files; returns the files written.

    * ``class_counts.png`` from ``manifest.json`` (or ``summary.json``),
    * ``curves.png`` from ``log.csv`` (T0 from ``config.yaml`` for a deferred re-balancing),
    * ``per_class_recall.png`` from ``summary.json`` (test at best-validation and at last epoch), if finished.

    Figures are titled with the method's paper label (``M2m · digits-lt · seed 0``). Called by the
    engine at the end of training. With ``missing_ok`` (default), a missing matplotlib is reported
    through ``log`` and nothing is written instead of failing the run.
    """
    path = Path(run_dir)
    if not path.is_dir():
        raise FileNotFoundError(
            f"run_dir='{path}' is not a directory; pass a run directory (e.g. runs/digits-lt/erm/seed0)."
        )
    return figures.draw_run_figures(run_figure_inputs(path), log=log, missing_ok=missing_ok)


def run_figure_inputs(path: Path) -> figures.RunFigureInputs:
    """What a run's figures are drawn from, read from its files (a damaged file leaves its part out; a
    damaged log.csv is an error naming it)."""
    run = RunDir(path)
    return figures.RunFigureInputs(
        out_dir=run.path,
        config=_quietly(run.read_config) or {},
        manifest=_quietly(run.read_manifest),
        summary=_quietly(run.read_summary) if run.finished else None,
        log_rows=run.read_log() if (run / RunDir.LOG).exists() else None,
    )


def _quietly(read: Callable[[], Any]) -> Any:
    """A file a figure annotation reads: a damaged one only leaves the annotation out."""
    try:
        value = read()
    except (OSError, ValueError, RunDirError):
        return None
    return value if isinstance(value, dict) else None


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
    "RunDir",
    "TrainingCheckpoint",
    "write_run_figures",
    "atomic_write_json",
    "atomic_write_text",
]
