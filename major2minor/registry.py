"""One tiny registry for models, losses, re-balancing methods, presets and data sets.

Every pluggable part is found by name through a :class:`Registry`; an unknown name raises an
error that lists the valid names and suggests the closest one, so a typo on the command line is
caught before any work starts.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional


class UnknownNameError(KeyError, ValueError):
    """Raised for a name that is not registered; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


def did_you_mean(value: str, choices: List[str]) -> str:
    close = difflib.get_close_matches(str(value), choices, n=1, cutoff=0.5)
    return f" Did you mean '{close[0]}'?" if close else ""


@dataclass
class Entry:
    name: str
    obj: Any
    help: str


class Registry:
    """A name -> factory map with ``register`` / ``get`` / ``create`` / ``names``."""

    def __init__(self, kind: str, parameter: str):
        self.kind = kind            # e.g. "model"
        self.parameter = parameter  # the config key that selects it, e.g. "model.name"
        self._entries: Dict[str, Entry] = {}

    def register(self, name: str, obj: Any = None, *, help: str = "") -> Callable:
        def add(o: Any) -> Any:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            doc = help or ((o.__doc__ or "").strip().splitlines() or [""])[0]
            self._entries[name] = Entry(name, o, doc)
            return o

        return add(obj) if obj is not None else add

    def get(self, name: str) -> Any:
        _load_builtins()
        if name not in self._entries:
            valid = self.names()
            raise UnknownNameError(
                f"{self.parameter}='{name}' is not a known {self.kind}; valid: {', '.join(valid)}."
                + did_you_mean(name, valid)
            )
        return self._entries[name].obj

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self.get(name)(*args, **kwargs)

    def names(self) -> List[str]:
        _load_builtins()
        return sorted(self._entries)

    def entries(self) -> List[Entry]:
        _load_builtins()
        return [self._entries[n] for n in sorted(self._entries)]

    def __contains__(self, name: str) -> bool:
        _load_builtins()
        return name in self._entries


MODELS = Registry("model", "model.name")
LOSSES = Registry("loss", "loss.name")
REBALANCERS = Registry("re-balancing", "rebalance.name")
METHODS = Registry("method preset", "method")
DATASETS = Registry("data set", "data.name")

REGISTRIES = {"models": MODELS, "losses": LOSSES, "rebalancers": REBALANCERS,
              "methods": METHODS, "datasets": DATASETS}

_loaded: Optional[bool] = None


def _load_builtins() -> None:
    """Import the built-in modules once so that their ``register`` calls have run."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    import major2minor.data.datasets  # noqa: F401
    import major2minor.losses  # noqa: F401
    import major2minor.methods  # noqa: F401
    import major2minor.models  # noqa: F401
