"""Atomic, checksummed checkpoints that never run code when loaded; resume; import of the official
M2m ResNet-32 checkpoints.

Writing: every file is written atomically (:mod:`major2minor.atomic`: a temporary file in the same
directory, flushed, fsync'ed and renamed over the target, so a crash leaves either the old or the new
file, never a truncated one).  Before ``last.pt`` is replaced, the previous good copy is kept as
``last.prev.pt`` (hard-linked, so ``last.pt`` itself exists at every moment).

Integrity: a bit flip that keeps the length (a bad disk, a careless edit) is not caught by the zip
format torch writes: it would resume silently with other weights.  So :func:`save_checkpoint` stores the
SHA-256 of the file inside the file itself, as the zip archive comment (the last 83 bytes,
``major2minor-sha256:<hex>``; the digest covers every byte before it), and :func:`load_checkpoint`
verifies it before anything is unpickled.  Inside the file rather than in a side file because that is
crash-safe by construction: the content and its checksum are published by the same atomic rename, and
the hard link ``last.prev.pt`` carries its own checksum, so there is no moment (a crash between two
writes) at which a good file and its checksum disagree.  The archive comment is part of the zip format,
so ``torch.load`` and ``zipfile`` still read these files as they are.  Files without it (runs of older
versions, the official ``.t7`` files, files of other tools) load unverified.  The checksum detects
damage, not tampering: anyone who can edit the file can recompute it.

Loading never runs code: ``torch.load(..., weights_only=True)`` admits tensors, plain containers and
numbers only.  Our checkpoints hold nothing else (state dicts, the history as dicts/lists of numbers and
strings, RNG states as uint8 tensors, the config as a plain dict), and :func:`save_checkpoint` refuses
to write one that does, so every checkpoint it writes can be resumed from.  A file that references other
Python objects (a pickled model or class, or a file crafted to run code) is refused with
:class:`CheckpointError` before any of it is executed; the error says how to re-save only the weights.

Resuming (:func:`load_resume_checkpoint`): if ``last.pt`` is unreadable (missing, truncated, corrupted,
failing its checksum, refused, not a training checkpoint) and ``last.prev.pt`` is good, the run resumes
from ``last.prev.pt`` with a loud warning (logged and ``warnings.warn``); the unreadable file is moved
aside to ``last.corrupt.pt``, never deleted.  The epoch(s) after ``last.prev.pt`` are trained again, from
exactly the saved state, so the final result is the same.  If both are unreadable, resuming is refused
with a message saying why for each.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import pickletools
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import torch

from major2minor.atomic import PathLike, atomic_write_bytes


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, truncated, corrupted, refused or does not fit the model.

    ``reason`` is the short why (without the file name and the fix), for messages that combine several.
    """

    def __init__(self, message: str, reason: Optional[str] = None):
        super().__init__(message)
        self.reason = reason or message


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


_SEAL_TAG = b"major2minor-sha256:"
_SEAL_LEN = len(_SEAL_TAG) + 64  # the archive comment: tag + hex digest
_EOCD = b"PK\x05\x06"  # zip end-of-central-directory record, 22 bytes + the comment


def _seal(blob: bytes) -> bytes:
    """``blob`` (a zip written by ``torch.save``) with its SHA-256 as the archive comment.

    The comment length field of the end record is set first, so the digest covers it too.  A blob that
    does not end in a comment-less end record (not the layout ``torch.save`` writes) is kept unsealed.
    """
    if len(blob) < 22 or blob[-22:-18] != _EOCD or blob[-2:] != b"\x00\x00":
        return blob
    body = blob[:-2] + _SEAL_LEN.to_bytes(2, "little")
    return body + _SEAL_TAG + hashlib.sha256(body).hexdigest().encode("ascii")


def _checksum_ok(data: bytes) -> Optional[bool]:
    """True/False when ``data`` carries our checksum and it matches/does not; None when it carries none."""
    if len(data) < _SEAL_LEN or not data[-_SEAL_LEN:].startswith(_SEAL_TAG):
        return None
    return hashlib.sha256(data[:-_SEAL_LEN]).hexdigest().encode("ascii") == data[-64:]


def _unsafe_globals(blob: bytes) -> list:
    find = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)  # torch >= 2.5
    return list(find(io.BytesIO(blob))) if find is not None else []


def save_checkpoint(state: Dict[str, Any], path: PathLike, keep_previous: bool = False) -> None:
    """Serialise ``state`` fully in memory first, seal it with its checksum, then write it atomically
    (tmp, fsync, rename).

    A failure anywhere (in ``torch.save``, the write, the rename) leaves the existing file intact.  A state
    holding Python objects that ``weights_only`` loading refuses is not written: the run could never be
    resumed from it, so this fails now, naming them, rather than at the resume.
    """
    buf = io.BytesIO()
    torch.save(state, buf)
    blob = buf.getvalue()
    path = Path(path)
    unsafe = _unsafe_globals(blob)
    if unsafe:
        raise CheckpointError(
            f"not writing checkpoint {path}: its state holds Python objects ({', '.join(unsafe)}) "
            "that loading refuses (only tensors, plain containers, numbers and strings load); "
            "store them as tensors or plain Python types."
        )
    if keep_previous and path.exists():
        _keep_previous(path)
    atomic_write_bytes(path, _seal(blob))


_REFUSED_GLOBAL = re.compile(r"[Uu]nsupported (?:global: )?GLOBAL ([\w.]+)")
_UNSUPPORTED_OPCODE = re.compile(r"Unsupported operand (\d+)")


def _find_in_whole_pickle(data: bytes, match: Callable[[Any, Any], Optional[str]]) -> Optional[str]:
    """``match(op, arg)`` for the first opcode it accepts, in a pickle that parses to its end; None otherwise.

    Tells a refusal from damage: a legacy file cut off inside a GLOBAL opcode is reported by torch as a
    refused global with half a name ("collections.Ordere"), and a flipped byte in a zip's ``data.pkl`` as
    an odd global or opcode.  ``pickletools`` only parses; it never imports or calls anything.  In a zip,
    ``zipfile`` checks the CRC of ``data.pkl`` as it reads it.
    """
    try:
        if data[:4] == b"PK\x03\x04":
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                pkl = next(n for n in zf.namelist() if n.endswith("data.pkl"))
                stream = io.BytesIO(zf.read(pkl))
        else:
            stream = io.BytesIO(data)
        for _ in range(4):  # legacy files: magic number, protocol, sys info, then the object
            # a list, not a generator: the pickle must be parsed to its STOP even after the match
            found = [m for m in [match(op, arg) for op, arg, _pos in pickletools.genops(stream)] if m]
            if found:
                return found[0]
    except Exception:  # noqa: BLE001 - any parse error: the pickle is damaged or cut off
        return None
    return None


def _refusal(exc: BaseException, data: bytes) -> Optional[str]:
    """What a ``weights_only`` load refused in an intact file, or None when the file is damaged."""
    if not isinstance(exc, pickle.UnpicklingError):
        return None
    m = _REFUSED_GLOBAL.search(str(exc))
    if m is not None:
        reported, attr = m.group(1), m.group(1).rpartition(".")[2]  # torch drops "builtins."

        def named(op, arg) -> Optional[str]:
            if op.name == "GLOBAL" and str(arg).rpartition(" ")[2] == attr:
                module, _, name = str(arg).partition(" ")
                return f"{'builtins' if module == '__builtin__' else module}.{name}"
            return reported if op.name == "STACK_GLOBAL" else None

        name = _find_in_whole_pickle(data, named)
        if name is not None:
            return (
                f"refused: it contains Python objects other than tensors and plain containers (it references "
                f"{name}), so it was not loaded, because loading it could run code"
            )
    m = _UNSUPPORTED_OPCODE.search(str(exc))
    if m is not None:
        code = int(m.group(1))
        opname = _find_in_whole_pickle(data, lambda op, arg: op.name if ord(op.code) == code else None)
        if opname is not None:
            return (
                f"refused: it was pickled with opcode {opname} (pickle protocol 4 or later), which the loader "
                "that cannot run code does not read, so it was not loaded"
            )
    return None


_PICKLED_TYPES = {
    "EMPTY_LIST": "a list",
    "EMPTY_DICT": "a dict",
    "EMPTY_TUPLE": "a tuple",
    "EMPTY_SET": "a set",
    "MARK": "a sequence",
    "GLOBAL": "an object",
    "STACK_GLOBAL": "an object",
}


def _plain_pickle(data: bytes) -> Optional[str]:
    """What a whole, plain pickle holds ("a list"); None for what ``torch.save`` writes (a zip, or the legacy
    format, whose first pickle is torch's magic number) and for anything that does not parse to its end.
    ``pickletools`` only parses: nothing is imported or run."""
    if data[:4] == b"PK\x03\x04":
        return None
    try:
        ops = [(op.name, arg) for op, arg, _pos in pickletools.genops(io.BytesIO(data))]
    except Exception:  # noqa: BLE001 - cut off or not a pickle: damage, reported as such
        return None
    first = next(((name, arg) for name, arg in ops if name not in ("PROTO", "FRAME")), ("STOP", None))
    if first[0].startswith("LONG") and first[1] == torch.serialization.MAGIC_NUMBER:
        return None
    if first[0] in ("STOP", "FRAME"):
        return None
    return _PICKLED_TYPES.get(first[0], "a plain value")


def _brief(exc: BaseException) -> str:
    """One line saying why torch could not read a file (its messages run to paragraphs)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    m = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n\n|$)", text, re.S)
    if m:
        text = m.group(1)
    text = " ".join(text.split()).split(". ")[0]
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


def _damage_hint(path: Path) -> str:
    if path.stem.endswith(".prev"):
        return "delete it (it is only the fallback copy of the checkpoint before it)."
    return f"delete it to start over, or resume from {previous_path(path)} if it exists."


def load_checkpoint(path: PathLike, map_location: Any = "cpu") -> Dict[str, Any]:
    """Load a checkpoint without running any code from it, after verifying its checksum where it has one.

    The bytes are read once and the very bytes verified are unpickled.  Raises :class:`CheckpointError`
    (distinct messages) for a missing file, a checksum mismatch, a file that holds Python objects other
    than tensors and plain containers (refused: loading it could run code), and a truncated or corrupted one.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist.", reason="it does not exist") from None
    except OSError as exc:
        raise CheckpointError(f"checkpoint {path} cannot be read ({exc}).", reason=f"cannot be read: {exc}") from exc
    if _checksum_ok(data) is False:
        reason = "checksum mismatch: the file was modified or corrupted after it was written"
        raise CheckpointError(f"checkpoint {path}: {reason}; {_damage_hint(path)}", reason=reason)
    if not data:
        reason = "truncated or corrupted (the file is empty)"
        raise CheckpointError(f"checkpoint {path} is {reason}; {_damage_hint(path)}", reason=reason)
    try:
        with warnings.catch_warnings():  # a file it cannot read is explained below; torch's aside only confuses
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated zip, bad pickle, refused global, ...
        reason = _refusal(exc, data)
        plain = _plain_pickle(data)
        if plain is not None and (reason is None or "Python objects" not in reason):  # code-running ones: refused
            reason = f"not a PyTorch checkpoint: it is a plain Python pickle of {plain}, not a file torch.save writes"
            raise CheckpointError(
                f"checkpoint {path} is {reason}, so it holds no model weights; give a checkpoint written by "
                "torch.save (e.g. a run's best.pt, or an official M2m ckpt.t7).",
                reason=reason,
            ) from None
        if reason is not None:  # no advice to load it unsafely: a refused file may be crafted to run code
            raise CheckpointError(
                f"checkpoint {path} was {reason}. If you made it, re-save only the weights with "
                "torch.save({'net': model.state_dict()}, path) in the program that made it, and give that file.",
                reason=reason,
            ) from None
        reason = f"truncated or corrupted ({_brief(exc)})"
        raise CheckpointError(f"checkpoint {path} is {reason}; {_damage_hint(path)}", reason=reason) from exc


RESUME_KEYS = ("model", "optimizer", "state", "rng", "epoch")


def _load_training_checkpoint(path: Path) -> Dict[str, Any]:
    obj = load_checkpoint(path)
    missing = [k for k in RESUME_KEYS if not isinstance(obj, dict) or k not in obj]
    if missing:
        reason = f"not a training checkpoint of major2minor (no {missing})"
        raise CheckpointError(f"checkpoint {path} is {reason}; it cannot be resumed from.", reason=reason)
    return obj


def load_resume_checkpoint(
    run_dir: PathLike, log: Optional[Callable[[str], None]] = None
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
            raise CheckpointError(
                f"cannot resume {run_dir}: {last.name} cannot be used ({exc.reason}). There is no "
                f"{prev.name} to fall back on; start over in a new directory (run.dir=PATH) or "
                "remove this one."
            ) from exc
        try:
            obj = _load_training_checkpoint(prev)
        except CheckpointError as exc_prev:
            raise CheckpointError(
                f"cannot resume {run_dir}: both {last.name} and {prev.name} are unreadable "
                f"({last.name}: {exc.reason}; {prev.name}: {exc_prev.reason}); start over in a new "
                "directory (run.dir=PATH) or remove this one."
            ) from exc_prev
        corrupt = last.with_name("last.corrupt.pt")
        if not last.exists():
            what, fate = f"{last} does not exist", f"Nothing was moved aside: there was no {last.name}."
        else:
            what = f"{last} is unreadable ({exc.reason})"
            try:
                os.replace(last, corrupt)
                fate = f"The unreadable file was moved to {corrupt}."
            except FileNotFoundError:  # another rank of the same run moved it a moment ago
                fate = f"The unreadable file was moved aside already (to {corrupt}, by another process of this run)."
        msg = (
            f"WARNING: {what}. Resuming from the previous good checkpoint {prev} (end of epoch "
            f"{int(obj['epoch']) + 1}) instead; the epochs after it are trained again from the saved state. {fate}"
        )
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
            sd = {k[len(prefix) :]: v for k, v in sd.items()}
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
            "Check model.name and model.head (LDAM checkpoints use the normed head)."
        )
    for k, v in sd.items():
        if own[k].shape != v.shape:
            raise CheckpointError(
                f"checkpoint {path}: '{k}' has shape {tuple(v.shape)} but the model expects "
                f"{tuple(own[k].shape)}; the class count or architecture differs from this run's."
            )
    model.load_state_dict(sd)
    return obj
