"""Re-balancing strategies and the paper's method presets; importing registers them."""
from major2minor.methods import m2m  # noqa: F401,E402
from major2minor.methods.base import (PRESETS, Preset, Rebalancer, effective_number_weights,  # noqa: F401
                                      inverse_frequency)
