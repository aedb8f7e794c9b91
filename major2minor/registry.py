"""One tiny registry for models, losses, re-balancing methods, presets and data sets.

Every pluggable part is found by name through a :class:`Registry`; an unknown name raises an
error that lists the valid names and suggests the closest one, so a typo on the command line is
caught before any work starts.

This module is a leaf: it imports nothing from the package.  The built-in parts register
themselves when :mod:`major2minor.catalogue` imports them, which the first lookup in any registry
does (:func:`load_builtins`), so every lookup sees every built-in name while ``import
major2minor.metrics`` (say) does not load the training stack; a part of your own registers the same way::

    from major2minor.registry import DATASETS
    DATASETS.register("my-data", build_my_data)

Metadata a part declares at registration (``help``, and keyword metadata such as a data set's
``prepare`` hook) lives in its :class:`Entry`, so callers read it from here rather than keeping
their own lists of names.  Keyword metadata is typed: a registry's ``info`` dataclass
(:class:`ModelInfo`, :class:`DatasetInfo`) declares the keywords it takes, and an unknown one is refused.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union


class UnknownNameError(KeyError, ValueError):
    """Raised for a name that is not registered; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


#: the module whose import registers every built-in part
BUILTINS = "major2minor.catalogue"
_builtins_loaded = False


def load_builtins() -> None:
    """Register the built-in parts once (import :data:`BUILTINS`); every lookup calls this first.

    Imported by name, not by an import statement: this leaf does not depend on the parts, they register
    themselves here.  Registering does not call it, so a built-in module registering itself while it is
    imported never starts the import of all the others from the middle of its own."""
    global _builtins_loaded
    if _builtins_loaded:
        return
    _builtins_loaded = True
    try:
        importlib.import_module(BUILTINS)
    except BaseException:
        _builtins_loaded = False
        raise


def did_you_mean(value: str, choices: List[str]) -> str:
    close = difflib.get_close_matches(str(value), choices, n=1, cutoff=0.5)
    return f" Did you mean '{close[0]}'?" if close else ""


@dataclass(frozen=True)
class NoInfo:
    """The metadata of a part whose registry takes none."""


@dataclass(frozen=True)
class ModelInfo:
    """What a model declares at registration: ``@MODELS.register("resnet32", bf16=("cpu",))``."""

    #: too little work per operation to split across threads (the engine trains it single-threaded)
    light: bool = False
    #: device types where bf16 autocast is measured faster (``True``: every device); ``train.amp=auto`` reads it
    bf16: Union[bool, Tuple[str, ...]] = ()


@dataclass(frozen=True)
class DatasetInfo:
    """What a data set declares at registration: ``@DATASETS.register("imagenet-lt", streams=True)``."""

    #: its own first-time step for ``m2m data prepare`` (``prepare(name, root, ...)``), if any
    prepare: Optional[Callable[..., Any]] = None
    #: documents per split of the published files (Reuters: checked against what is read)
    documents: Optional[Dict[str, int]] = None
    #: it has a streaming path: ``data.stream=true`` is allowed
    streams: bool = False


@dataclass
class Entry:
    """A registered part: its name, the object (class or factory), a one-line help and its typed metadata."""

    name: str
    obj: Any
    help: str
    info: Any = NoInfo()  # the registry's info dataclass (ModelInfo, DatasetInfo)
    index: int = 0  # registration order (the paper's order for the built-in presets)


class Registry:
    """A name -> part map with ``register`` / ``get`` / ``create`` / ``names`` / ``entry``."""

    def __init__(self, kind: str, parameter: str, info: type = NoInfo):
        self.kind = kind  # e.g. "model"
        self.parameter = parameter  # the config key that selects it, e.g. "model.name"
        self.info = info  # the dataclass of the keyword metadata a part declares at registration
        self._entries: Dict[str, Entry] = {}
        self._next_index = 0

    def register(self, name: str, obj: Any = None, *, help: str = "", **meta: Any) -> Callable:
        """Register ``obj`` under ``name`` (also usable as a decorator); ``meta`` are the fields of the
        registry's ``info`` dataclass, kept on the entry as ``entry.info``."""
        known = [f.name for f in dataclasses.fields(self.info)]
        unknown = sorted(set(meta) - set(known))
        if unknown:
            raise TypeError(f"{self.kind} '{name}': unknown registration metadata {unknown}; known: {known or 'none'}.")
        info = self.info(**meta)

        def add(o: Any) -> Any:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            doc = help or ((o.__doc__ or "").strip().splitlines() or [""])[0]
            self._entries[name] = Entry(name, o, doc, info, self._next_index)
            self._next_index += 1
            return o

        return add(obj) if obj is not None else add

    def unregister(self, name: str) -> None:
        """Remove ``name`` (for parts registered temporarily, e.g. in tests)."""
        self._entries.pop(name, None)

    def _all(self) -> Dict[str, Entry]:
        """Every registered entry, the built-in parts included (registered on the first lookup)."""
        load_builtins()
        return self._entries

    def entry(self, name: str) -> Entry:
        if name not in self._all():
            valid = self.names()
            raise UnknownNameError(
                f"{self.parameter}='{name}' is not a known {self.kind}; valid: {', '.join(valid)}."
                + did_you_mean(name, valid)
            )
        return self._entries[name]

    def get(self, name: str) -> Any:
        return self.entry(name).obj

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self.get(name)(*args, **kwargs)

    def names(self) -> List[str]:
        return sorted(self._all())

    def entries(self) -> List[Entry]:
        return [self._entries[n] for n in sorted(self._all())]

    def in_order(self) -> List[Entry]:
        """Entries in registration order."""
        return sorted(self._all().values(), key=lambda e: e.index)

    def __contains__(self, name: str) -> bool:
        return name in self._all()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


MODELS = Registry("model", "model.name", ModelInfo)
LOSSES = Registry("loss", "loss.name")
REBALANCERS = Registry("re-balancing", "rebalance.name")
METHODS = Registry("method preset", "method")
DATASETS = Registry("data set", "data.name", DatasetInfo)

REGISTRIES = {"models": MODELS, "losses": LOSSES, "rebalancers": REBALANCERS, "methods": METHODS, "datasets": DATASETS}


def part_label(registry: Registry, name: Any) -> Any:
    """A registered part's ``label`` (its name in tables and figures: ``"LDAM"``, ``"DRS"``), else ``name``."""
    if name in registry:
        return getattr(registry.get(name), "label", "") or name
    return name


def method_label(method: Optional[str], loss: Optional[str] = None, rebalance: Optional[str] = None) -> str:
    """A run's name in figures, legends and the report's rows: the preset's paper label (``"LDAM-DRW"``,
    ``"M2m-Self"``), else ``"LOSS / RE-BALANCING"`` as the parts label themselves (no re-balancing part
    for none)."""
    if method and method in METHODS:
        return METHODS.get(method).label
    loss_label = part_label(LOSSES, loss)
    reb = part_label(REBALANCERS, rebalance)
    if not loss_label:
        return str(method or "")
    return str(loss_label) + (f" / {reb}" if reb and reb not in ("–", "none") else "")
