"""Atomic checkpoints, resume, and import of the official M2m ResNet-32 checkpoints.

Every file is written to a temporary file in the same directory, flushed, fsync'ed and renamed
over the target, so a crash leaves either the old or the new file, never a truncated one.  Before
``last.pt`` is replaced, the previous good copy is kept as ``last.prev.pt``.
"""
from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Union

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


def save_checkpoint(state: Dict[str, Any], path: PathLike, keep_previous: bool = False) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    path = Path(path)
    if keep_previous and path.exists():
        prev = path.with_name(path.stem + ".prev" + path.suffix)
        os.replace(path, prev)
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
            f"delete it to start over, or resume from {path.with_name(path.stem + '.prev' + path.suffix)} "
            "if it exists.") from exc


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
