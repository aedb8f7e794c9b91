"""major2minor: M2m (Major-to-minor translation, Kim, Jeong & Shin, CVPR 2020) for imbalanced
classification, with the paper's baselines, data sets, metrics and recipes.

    from major2minor import load_config, train
    summary = train(load_config("digits-lt", ["method=m2m"]))

The names below are imported on first use (PEP 562), so ``import major2minor.metrics`` (say) loads that
module alone, not the training stack; the built-in parts register on the first registry lookup
(:func:`major2minor.registry.load_builtins`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from major2minor._version import __version__

if TYPE_CHECKING:  # for type checkers and the API reference (mkdocstrings reads these); never run
    from major2minor.config import Config, load_config
    from major2minor.methods.m2m import M2mConfig, M2mTranslator
    from major2minor.pipeline import train

#: the public names and the module each comes from
_LAZY = {
    "Config": "major2minor.config",
    "load_config": "major2minor.config",
    "M2mConfig": "major2minor.methods.m2m",
    "M2mTranslator": "major2minor.methods.m2m",
    "train": "major2minor.pipeline",
}

__all__ = ["Config", "M2mConfig", "M2mTranslator", "__version__", "load_config", "train"]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # later look-ups find it directly
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
