"""The built-in parts: importing this module registers every built-in data set, model, loss,
re-balancing method and method preset in :mod:`major2minor.registry`.

It is the one module that knows them all; the package's ``__init__`` imports it, so any
``import major2minor...`` sees the built-in names.  Nothing imports it back.
"""

from major2minor import losses, methods, models  # noqa: F401  (importing registers them)
from major2minor.data import datasets  # noqa: F401
