"""The built-in parts: importing this module registers every built-in data set, model, loss,
re-balancing method and method preset in :mod:`major2minor.registry`.

It is the one module that knows them all; the first lookup in any registry imports it
(:func:`major2minor.registry.load_builtins`), so every lookup sees the built-in names.  Nothing imports it
back.
"""

from major2minor import losses, methods, models  # noqa: F401  (importing registers them)
from major2minor.data import datasets  # noqa: F401
