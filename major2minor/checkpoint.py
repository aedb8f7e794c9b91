"""Atomic checkpoints, resume, and import of the official M2m ResNet-32 checkpoints.

Every file is written to a temporary file in the same directory, flushed, fsync'ed and renamed
over the target, so a crash leaves either the old or the new file, never a truncated one.  Before
``last.pt`` is replaced, the previous good copy is kept as ``last.prev.pt`` (hard-linked, so
``last.pt`` itself exists at every moment).

Resuming (:func:`load_resume_checkpoint`): if ``last.pt`` is unreadable (truncated, corrupted, not a
training checkpoint) and ``last.prev.pt`` is good, the run resumes from ``last.prev.pt`` with a loud
warning (logged and ``warnings.warn``); the unreadable file is moved aside to ``last.corrupt.pt``, never
deleted.  The epoch(s) after ``last.prev.pt`` are trained again, from exactly the saved state, so the
final result is the same.  If both are unreadable, resuming is refused with a message saying so.
"""
from __future__ import annotations

import io
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple, Union

import torch

PathLike = Union[str, os.PathLike]


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, truncated, corrupted or does not fit the model."""


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def atomic_write_text(path: PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n")


def _jsonable(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    return str(o)


def previous_path(path: PathLike) -> Path:
    """``last.pt`` -> ``last.prev.pt``: where the previous good copy of a checkpoint is kept."""
    path = Path(path)
    return path.with_name(path.stem + ".prev" + path.suffix)


def _keep_previous(path: Path) -> None:
    """Make ``last.prev.pt`` a copy of ``last.pt`` without ever removing ``last.pt``.

    A hard link under a temporary name, renamed over ``last.prev.pt``; where links are not supported,
    an atomic copy.  (Renaming ``last.pt`` away first would leave a moment with no ``last.pt``.)
    """
    prev = previous_path(path)
    tmp = prev.with_name(f".{prev.name}.{os.getpid()}.link")
    try:
        if tmp.exists():
            tmp.unlink()
        os.link(path, tmp)
        os.replace(tmp, prev)
    except OSError:
        if tmp.exists():
            tmp.unlink()
        atomic_write_bytes(prev, path.read_bytes())


def save_checkpoint(state: Dict[str, Any], path: PathLike, keep_previous: bool = False) -> None:
    """Serialise ``state`` fully in memory first, then write it atomically (tmp, fsync, rename).

    A failure anywhere (in ``torch.save``, the write, the rename) leaves the existing file intact.
    """
    buf = io.BytesIO()
    torch.save(state, buf)
    path = Path(path)
    if keep_previous and path.exists():
        _keep_previous(path)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: PathLike, map_location: Any = "cpu") -> Dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist.")
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # truncated zip, bad pickle, ...
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupted ({type(exc).__name__}: {exc}); "
            f"delete it to start over, or resume from {previous_path(path)} if it exists.") from exc


RESUME_KEYS = ("model", "optimizer", "state", "rng", "epoch")


def _load_training_checkpoint(path: Path) -> Dict[str, Any]:
    obj = load_checkpoint(path)
    missing = [k for k in RESUME_KEYS if not isinstance(obj, dict) or k not in obj]
    if missing:
        raise CheckpointError(f"checkpoint {path} is not a training checkpoint of major2minor (no {missing}); "
                              "it cannot be resumed from.")
    return obj


def load_resume_checkpoint(run_dir: PathLike, log: Optional[Callable[[str], None]] = None
                           ) -> Tuple[Dict[str, Any], Path]:
    """The checkpoint to resume ``run_dir`` from, and its path.

    ``last.pt`` if it is readable; otherwise ``last.prev.pt`` with a loud warning, after moving the
    unreadable ``last.pt`` aside to ``last.corrupt.pt`` (so the next save cannot rotate it over the good
    copy).  Raises :class:`CheckpointError` when neither can be read.
    """
    run_dir = Path(run_dir)
    last = run_dir / "last.pt"
    prev = previous_path(last)
    try:
        return _load_training_checkpoint(last), last
    except CheckpointError as exc:
        if not prev.exists():
            raise CheckpointError(f"cannot resume {run_dir}: {exc} There is no {prev.name} to fall back on; "
                                  "start over in a new directory (run.dir=PATH) or remove this one.") from exc
        try:
            obj = _load_training_checkpoint(prev)
        except CheckpointError as exc_prev:
            raise CheckpointError(f"cannot resume {run_dir}: both {last.name} and {prev.name} are unreadable "
                                  f"({exc}; {exc_prev}); start over in a new directory (run.dir=PATH) or "
                                  "remove this one.") from exc_prev
        corrupt = last.with_name("last.corrupt.pt")
        try:
            os.replace(last, corrupt)
        except FileNotFoundError:   # missing, or another rank of the same run moved it already
            pass
        msg = (f"WARNING: {last} is unreadable ({exc}). Resuming from the previous good checkpoint {prev} "
               f"(end of epoch {int(obj['epoch']) + 1}) instead; the epochs after it are trained again from "
               f"the saved state. The unreadable file was moved to {corrupt}.")
        warnings.warn(msg, RuntimeWarning, stacklevel=2)
        if log is not None:
            log(msg)
        return obj, prev


def extract_state_dict(obj: Dict[str, Any], path: PathLike = "?") -> Dict[str, torch.Tensor]:
    """The model weights inside our checkpoints (``model``) or the official ones (``net``)."""
    for key in ("model", "net", "state_dict"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            sd = obj[key]
            break
    else:
        if isinstance(obj, dict) and obj and all(torch.is_tensor(v) for v in obj.values()):
            sd = obj
        else:
            raise CheckpointError(f"{path} holds no model weights (expected a 'model' or 'net' entry).")
    # DataParallel / DDP / torch.compile prefixes
    for prefix in ("module.", "_orig_mod."):
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def load_weights(model: torch.nn.Module, path: PathLike) -> Dict[str, Any]:
    """Load our or an official checkpoint into ``model``; a mismatch names what differs."""
    obj = load_checkpoint(path)
    sd = extract_state_dict(obj, path)
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {path} does not fit model {type(model).__name__}: "
            f"missing keys {missing[:4]}{'...' if len(missing) > 4 else ''}, "
            f"unexpected keys {unexpected[:4]}{'...' if len(unexpected) > 4 else ''}. "
            "Check model.name and model.head (LDAM checkpoints use the normed head).")
    for k, v in sd.items():
        if own[k].shape != v.shape:
            raise CheckpointError(
                f"checkpoint {path}: '{k}' has shape {tuple(v.shape)} but the model expects "
                f"{tuple(own[k].shape)}; the class count or architecture differs from this run's.")
    model.load_state_dict(sd)
    return obj
