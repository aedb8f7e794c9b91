"""``log.csv``, a run's per-epoch log: one row per epoch, written whole and atomically after every epoch.

Numbers are written with 6 significant digits, lists (per-class counts, class weights) as space-separated
values, ``None`` as an empty cell; :func:`read_log` reads numbers back as floats, empty cells as None and
lists as text.  The columns are explained in the docs (Baselines and metrics: what log.csv shows).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from major2minor.atomic import atomic_write_text

PathLike = Union[str, Path]
LogRows = List[Dict[str, Any]]


def write_log(path: Path, rows: List[Dict[str, Any]]) -> None:
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


def read_log(path: PathLike) -> LogRows:
    """Read a run's ``log.csv``: numbers become floats, empty cells None, space-separated lists stay text.

    The engine rewrites log.csv whole and atomically after every epoch, so an empty file, a header
    without rows or a row with the wrong number of fields means a copy was cut short or the run was
    interrupted: refused here naming the file, rather than a vague "no rows" from a figure later.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; a run writes log.csv after its first epoch.")
    if (path.parent / "summary.json").exists():  # finished: --resume reuses the run and never rewrites its log
        hint = (
            "the run finished, so --resume will not rewrite it: re-copy the file from where the run was made, "
            "or train the run again in a new directory (run.dir=PATH)."
        )
    else:
        hint = "the run may have been interrupted: resume it with --resume (or re-copy the file)."
    rows: LogRows = []
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames:
            raise ValueError(f"{path}: the per-epoch log is empty (no header, no rows); {hint}")
        for rec in reader:
            if None in rec or None in rec.values():  # csv puts extra fields under None, fills missing ones with None
                got = sum(rec.get(k) is not None for k in reader.fieldnames) + len(rec.get(None) or ())
                line = reader.line_num
                what = "a half-written last line" if next(reader, None) is None else "a malformed row"
                raise ValueError(
                    f"{path}, line {line}: {what} ({got} fields, the header has {len(reader.fieldnames)}); {hint}"
                )
            rows.append({k: _cell(v) for k, v in rec.items()})
    if not rows:
        raise ValueError(f"{path}: the per-epoch log has a header but no rows; {hint}")
    return rows


def _cell(v: Optional[str]) -> Any:
    if v is None or v == "":
        return None
    try:
        return float(v)
    except ValueError:
        return v


__all__ = ["LogRows", "read_log", "write_log"]
