"""Exceptions shared by modules of different layers (a leaf: imports nothing from the package)."""

from __future__ import annotations


class MissingDependencyError(ImportError, RuntimeError):
    """An optional dependency (matplotlib, tensorboard, optuna) is needed but not installed."""
