"""The paper's methods as presets (``method=NAME``): a loss, a re-balancing and switches.

Registered in the order of the paper's tables (baselines first, M2m and its ablations last), which
is the order ``m2m report`` lists rows in.  ``label`` is the name the paper uses (figures, legends);
``rebalance_label`` names an ablation in the table's "Re-balancing" column.
"""

from __future__ import annotations

from major2minor.methods.base import Preset
from major2minor.registry import METHODS

#: DRW as kaidic/LDAM-DRW, the code behind the paper's LDAM-DRW number: class-balanced weights with
#: beta = 0.9999 and PyTorch's weighted cross-entropy mean.  The M2m public code's own re-weighting
#: (beta from its command line, the plain mean of w*l) stays reachable: method=drw rebalance.cb_beta=0.999
#: rebalance.weighted_mean=mean (recorded as method "ce+drw").
KAIDIC_DRW = {"rebalance.cb_beta": 0.9999, "rebalance.weighted_mean": "weights"}

#: The preset of plain training: the results table's default reference row, the method of M2m's g and of the
#: shared prefixes before T0, and in a multi-seed grid the cells whose best checkpoints serve as g.
PLAIN_METHOD = "erm"

PRESETS = [
    (PLAIN_METHOD, Preset("ce", "none", "ERM: cross-entropy, no re-balancing", label="ERM")),
    ("ros", Preset("ce", "ros", "ROS: random over-sampling proportional to 1/N", label="ROS")),
    ("smote", Preset("ce", "smote", "SMOTE: synthetic minority over-sampling up to N_max", label="SMOTE")),
    ("rw", Preset("ce", "rw", "RW: re-weighting by 1/N", label="RW")),
    ("cb-rw", Preset("ce", "cbrw", "CB-RW: class-balanced re-weighting (effective number)", label="CB-RW")),
    ("drs", Preset("ce", "drs", "DRS: deferred re-sampling from T0", label="DRS")),
    ("drw", Preset("ce", "drw", "DRW: deferred (class-balanced) re-weighting from T0", KAIDIC_DRW, label="DRW")),
    ("focal", Preset("focal", "none", "Focal loss (gamma 1)", label="Focal")),
    ("ldam", Preset("ldam", "none", "LDAM loss with the cosine head", label="LDAM")),
    ("ldam-drw", Preset("ldam", "drw", "LDAM loss + deferred re-weighting", KAIDIC_DRW, label="LDAM-DRW")),
    (
        "balanced-softmax",
        Preset("balanced-softmax", "none", "Balanced Softmax / logit-adjusted CE", label="Balanced Softmax"),
    ),
    (
        "m2m-self",
        Preset(
            "ce",
            "m2m",
            "M2m-Self: f itself plays g",
            {"m2m.self_generator": True},
            label="M2m-Self",
            rebalance_label="M2m-Self",
        ),
    ),
    (
        "m2m-no-reject",
        Preset(
            "ce",
            "m2m",
            "M2m-No-Reject: keep every translated sample",
            {"m2m.reject": False},
            label="M2m-No-Reject",
            rebalance_label="M2m-No-Reject",
        ),
    ),
    (
        "m2m-gamma0",
        Preset(
            "ce",
            "m2m",
            "M2m with gamma = 0: accept whatever g says (supplement, Table 1)",
            {"m2m.gamma": 0.0},
            label="M2m (gamma = 0)",
            rebalance_label="M2m, gamma = 0",
        ),
    ),
    ("m2m", Preset("ce", "m2m", "M2m: major-to-minor translation from T0", label="M2m")),
    ("ldam-m2m", Preset("ldam", "m2m", "LDAM loss + M2m", label="LDAM-M2m")),
    (
        "balanced-softmax-m2m",
        Preset("balanced-softmax", "m2m", "Balanced Softmax + M2m (beyond the paper)", label="Balanced Softmax + M2m"),
    ),
]

for _name, _preset in PRESETS:
    METHODS.register(_name, _preset, help=_preset.help)
