"""``m2m list keys``: every configuration key with its type, default, allowed values and one line of help.

Read from the configuration dataclasses themselves: the type annotation, the default, the check declared
next to the parameter (``checks``: its description and hint) and the ``#`` comment on the parameter's line
(or the comment lines just above it) in the dataclass's source.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing
from typing import Any, Dict, List

from major2minor.config import Config, children

_FIELD = re.compile(r"^\s+(\w+)\s*:\s*[^=#]+(?:=[^#]*)?(?:#\s*(.*))?$")
_COMMENT = re.compile(r"^\s+#\s?(.*)$")


@dataclasses.dataclass(frozen=True)
class KeyInfo:
    """One configuration key as ``m2m list keys`` shows it."""

    key: str
    type: str
    default: Any
    allowed: str
    help: str


def field_comments(cls: type) -> Dict[str, str]:
    """``{field: comment}`` from a dataclass's source: the comment on the field's line, else the comment
    lines right above it (joined)."""
    try:
        lines = inspect.getsource(cls).splitlines()
    except (OSError, TypeError):  # a class defined where its source cannot be read
        return {}
    comments: Dict[str, str] = {}
    above: List[str] = []
    for line in lines[1:]:
        if (m := _COMMENT.match(line)) is not None:
            above.append(m.group(1).strip())
            continue
        m = _FIELD.match(line)
        if m is not None and not m.group(1).startswith("_"):
            comments[m.group(1)] = (m.group(2) or " ".join(above)).strip()
        above = []
    return comments


def key_reference(node: Any = None, prefix: str = "") -> List[KeyInfo]:
    """Every leaf key of the configuration tree, in config.yaml's order."""
    node = Config() if node is None else node
    cls = type(node)
    hints = typing.get_type_hints(cls) if dataclasses.is_dataclass(cls) else {}
    checks = getattr(cls, "checks", {})
    comments = field_comments(cls)
    out: List[KeyInfo] = []
    for name, value in children(node):
        if dataclasses.is_dataclass(value):
            out += key_reference(value, f"{prefix}{name}.")
            continue
        check = checks.get(name)
        allowed = check.describe() if check is not None else ""
        help_text = comments.get(name) or (check.hint if check is not None else "")
        out.append(KeyInfo(prefix + name, _type_name(hints.get(name)), value, allowed, help_text))
    return out


def _type_name(hint: Any) -> str:
    if hint is None:
        return "?"
    text = getattr(hint, "__name__", None) if not typing.get_args(hint) else None
    return text or str(hint).replace("typing.", "")


def format_keys(keys: List[KeyInfo]) -> str:
    """One line per key: ``key  type = default  (allowed)  help``."""
    width = max(len(k.key) for k in keys)
    lines = []
    for k in keys:
        allowed = f"  [{k.allowed}]" if k.allowed else ""
        helps = f"  {k.help}" if k.help else ""
        lines.append(f"{k.key:<{width}}  {k.type} = {k.default!r}{allowed}{helps}")
    return "\n".join(lines)


__all__ = ["KeyInfo", "field_comments", "format_keys", "key_reference"]
