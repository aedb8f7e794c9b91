"""major2minor: M2m (Major-to-minor translation, Kim, Jeong & Shin, CVPR 2020) for imbalanced
classification, with the paper's baselines, data sets, metrics and recipes."""
__version__ = "0.1.0"

from major2minor.config import Config, load_config  # noqa: E402,F401
