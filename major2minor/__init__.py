"""major2minor: M2m (Major-to-minor translation, Kim, Jeong & Shin, CVPR 2020) for imbalanced
classification, with the paper's baselines, data sets, metrics and recipes.

    from major2minor import load_config, train
    summary = train(load_config("digits-lt", ["method=m2m"]))
"""

from major2minor import catalogue  # noqa: F401  (registers the built-in parts)
from major2minor._version import __version__
from major2minor.config import Config, load_config
from major2minor.methods.m2m import M2mConfig, M2mTranslator
from major2minor.pipeline import train

__all__ = ["Config", "M2mConfig", "M2mTranslator", "__version__", "load_config", "train"]
