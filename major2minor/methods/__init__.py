"""Re-balancing strategies (the :class:`Rebalancer` protocol) and the paper's method presets."""

from major2minor.methods import m2m, presets  # noqa: F401  (importing registers them)
from major2minor.methods.base import (
    EpochContext,
    Preset,
    Rebalancer,
    RunContext,
    effective_number_weights,
    inverse_frequency,
    register_method,
)
from major2minor.methods.m2m import M2mConfig, M2mTranslator

__all__ = [
    "EpochContext",
    "M2mConfig",
    "M2mTranslator",
    "Preset",
    "Rebalancer",
    "RunContext",
    "effective_number_weights",
    "inverse_frequency",
    "register_method",
]
