"""Built-in data sets; importing this package registers them in ``DATASETS``."""
from major2minor.data.datasets import digits  # noqa: F401
