"""Adding a re-balancing method or a data set is one file plus one registration line.

Both parts below are defined in this test file alone (as a user's own module would define them):
a toy re-balancing method with a config section and checks of its own, and a toy data set.  They
are registered (one line each), then trained, listed, validated and reported through the CLI,
with no change anywhere in the package.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, List

import numpy as np
import pytest
import torch

from major2minor.cli import main
from major2minor.config import Check, Interval
from major2minor.data.core import DataBundle, Split
from major2minor.methods.base import Rebalancer, register_method
from major2minor.registry import DATASETS, METHODS, REBALANCERS

# ------------------------------------------------------------------------------------------------
# a user's own method: loss weights (1 / N_c) ** strength from T0, with a config section "toy.*"


@dataclass
class ToyConfig:
    strength: float = 1.0  # exponent of the inverse class frequency

    checks: ClassVar[Dict[str, Check]] = {"strength": Interval(0, 4, hint="1 is plain 1/N re-weighting")}


class ToyUpweighting(Rebalancer):
    """Toy: loss weights (1/N_c)^strength from T0 (a user's own method)."""

    deferred = True
    label = "Toy-RW"
    config_section = "toy"
    config_class = ToyConfig

    def __init__(self, cfg, counts):
        super().__init__(cfg, counts)
        self.batches = 0

    def class_weights(self, epoch):
        if not self.active(epoch):
            return None
        w = (1.0 / np.asarray(self.counts, dtype=np.float64)) ** self.cfg.toy.strength
        return w / w.sum() * len(w)

    def transform_batch(self, model, x, y, epoch):
        self.batches += 1
        return x, y

    def epoch_stats(self) -> Dict[str, Any]:
        row, self.batches = {"toy_batches": self.batches}, 0
        return row

    @classmethod
    def progress_fields(cls, row):
        return {"batches": str(row["toy_batches"])}

    def run_summary(self, history: List[Dict[str, Any]]) -> Dict[str, Any]:
        return {"toy": {"batches": sum(r["toy_batches"] for r in history)}}


# ------------------------------------------------------------------------------------------------
# a user's own data set: three Gaussian blobs in 2-d, 60 / 20 / 6 training points


def build_toy_blobs(cfg, seed: int = 0) -> DataBundle:
    """Three Gaussian blobs in the plane, long-tailed (60 / 20 / 6), balanced val and test splits."""
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 3.0]])

    def split(per_class):
        x = np.concatenate([c + rng.normal(size=(n, 2)) for c, n in zip(centres, per_class)]).astype(np.float32)
        y = np.concatenate([[k] * n for k, n in enumerate(per_class)]).astype(np.int64)
        return Split(torch.from_numpy(x), torch.from_numpy(y))

    return DataBundle(
        name="toy-blobs",
        train=split([60, 20, 6]),
        val=split([10, 10, 10]),
        test=split([20, 20, 20]),
        num_classes=3,
        class_names=["a", "b", "c"],
        bounds=None,
    )


@pytest.fixture
def toy_parts():
    """Register the two parts (the one line each a user's module would have), unregister afterwards."""
    register_method("toy-rw", label="Toy-RW")(ToyUpweighting)
    DATASETS.register("toy-blobs", build_toy_blobs)
    yield
    for registry, name in ((REBALANCERS, "toy-rw"), (METHODS, "toy-rw"), (DATASETS, "toy-blobs")):
        registry.unregister(name)


TOY_RUN = [
    "data.name=toy-blobs",
    "model.name=mlp",
    "model.hidden=[16]",
    "method=toy-rw",
    "train.epochs=3",
    "train.deferred_epoch=1",
    "train.batch_size=16",
    "optim.warmup_epochs=0",
    "optim.milestones=[2]",
    "train.progress=none",
]


def test_a_toy_method_and_data_set_train_through_the_cli(toy_parts, tmp_path, capsys):
    run = tmp_path / "toy"
    assert main(["train", *TOY_RUN, "toy.strength=0.5", f"run.dir={run}"]) == 0
    out = capsys.readouterr().out
    assert "| batches 6" in out  # the method's progress field on the epoch line

    summary = json.loads((run / "summary.json").read_text())
    assert (summary["method"], summary["rebalance"], summary["dataset"]) == ("toy-rw", "toy-rw", "toy-blobs")
    assert summary["toy"]["batches"] == 3 * 6  # 86 samples in batches of 16, three epochs
    config = (run / "config.yaml").read_text()
    assert "toy:\n  strength: 0.5" in config
    log = (run / "log.csv").read_text().splitlines()
    header, first, second = log[0].split(","), log[1].split(","), log[2].split(",")
    assert "toy_batches" in header
    weights = header.index("class_weights")
    assert first[weights] == "" and second[weights] != ""  # deferred: weights from T0 = 1 on

    # listed, validated by its own checks, and named by its own label in a report
    assert main(["list", "methods"]) == 0 and "toy-rw" in capsys.readouterr().out
    assert main(["list", "datasets"]) == 0 and "toy-blobs" in capsys.readouterr().out
    assert main(["train", *TOY_RUN, "toy.strength=9", f"run.dir={tmp_path / 'bad'}"]) == 2
    assert "toy.strength=9.0 must be in [0, 4]; 1 is plain 1/N re-weighting" in capsys.readouterr().err
    assert main(["report", str(run), "--no-figures", "--out", str(tmp_path / "report")]) == 0
    assert "| Toy-RW |" in (tmp_path / "report" / "results.md").read_text()


def test_unregistered_parts_leave_no_trace(toy_parts):
    from major2minor.config import Config

    assert "toy" in Config().sections
    for registry, name in ((REBALANCERS, "toy-rw"), (METHODS, "toy-rw"), (DATASETS, "toy-blobs")):
        registry.unregister(name)
    assert "toy" not in Config().sections and "toy-rw" not in METHODS


def test_registration_metadata_is_typed():
    """A model's and a data set's registration keywords are the fields of ModelInfo / DatasetInfo; a typo is
    refused when registering, not silently ignored when read."""
    from major2minor.registry import MODELS, DatasetInfo, ModelInfo

    assert MODELS.entry("resnet32").info == ModelInfo(light=False, bf16=("cpu",))
    assert MODELS.entry("mlp").info.light and DATASETS.entry("imagenet-lt").info.streams
    assert DATASETS.entry("digits-lt").info == DatasetInfo()
    with pytest.raises(TypeError, match=r"unknown registration metadata \['bf61'\]; known: \['light', 'bf16'\]"):
        MODELS.register("typo-model", object, bf61=("cpu",))
    with pytest.raises(TypeError, match="unknown registration metadata"):
        REBALANCERS.register("typo-method", object, deferred=True)
    assert "typo-model" not in MODELS and "typo-method" not in REBALANCERS
