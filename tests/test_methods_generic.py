"""One suite every registered method preset must pass (issue 4).

Each preset trains for a few epochs on digits-lt through ``pipeline.train`` (tiny settings, T0 = 1), and
must: give finite losses and metrics; see, epoch by epoch, the class histogram its re-balancing
promises (``seen_per_class`` in the log: the labels the model was actually trained on, after any
batch transform) and train with the class weights it promises (``class_weights``), before and after
T0; see as many samples per epoch as the (possibly enlarged) training set holds; and give identical
results when run twice with the same seed.

What a preset promises is derived from its loss / re-balancing names (``EXPECTED``), so a new
preset is checked automatically; a new re-balancing must add its line there.
"""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from major2minor.checkpoint import load_checkpoint
from major2minor.config import load_config
from major2minor.methods import effective_number_weights, inverse_frequency
from major2minor.pipeline import train
from major2minor.registry import METHODS

EPOCHS, T0 = 2, 1
TINY = [
    f"train.epochs={EPOCHS}",
    f"train.deferred_epoch={T0}",
    "optim.warmup_epochs=1",
    "optim.milestones=[1]",
    "train.progress=none",
    "m2m.steps=2",
    "train.threads=1",
]  # one intra-op thread: these tiny nets only lose from more (and the CI cores are shared)

# re-balancing -> (sampling before T0, sampling from T0, class weights before T0, class weights from T0)
#   sampling: "all" = every training sample once (a shuffle), "uniform" = over-sampled 1/N (near-uniform
#   class histogram), "n_max" = SMOTE's enlarged set (every class N_max, each sample once)
#   weights: None, "rw" = 1/N normalised to sum C, "cb" = effective number (rebalance.cb_beta)
EXPECTED = {
    "none": ("all", "all", None, None),
    "ros": ("uniform", "uniform", None, None),
    "drs": ("all", "uniform", None, None),
    "rw": ("all", "all", "rw", "rw"),
    "cbrw": ("all", "all", "cb", "cb"),
    "drw": ("all", "all", None, "cb"),
    "smote": ("n_max", "n_max", None, None),
    "m2m": ("all", "uniform", None, None),  # translated slots keep their (over-sampled) label
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """run(name, tag) -> (cfg, summary, history), each run trained once per module."""
    root = tmp_path_factory.mktemp("methods")  # shared run.root: M2m presets share one cached g
    cache = {}
    threads = torch.get_num_threads()  # train.threads=1 sets it process-wide; restored below

    def run(name, tag="a", *extra):
        key = (name, tag, extra)
        if key not in cache:
            cfg = load_config(
                "digits-lt", [f"method={name}", *TINY, f"run.root={root}", f"run.dir={root / name / tag}", *extra]
            )
            summary = train(cfg, log=None)
            history = load_checkpoint(root / name / tag / "last.pt")["state"]["history"]
            cache[key] = (cfg, summary, history)
        return cache[key]

    yield run
    torch.set_num_threads(threads)


def _strip(history):
    return [{k: v for k, v in row.items() if "seconds" not in k} for row in history]


def _near_uniform(hist, n):
    """Each class within 5 binomial standard deviations of n / C (ERM's long tail is far outside)."""
    c = len(hist)
    sd = math.sqrt(n * (1 / c) * (1 - 1 / c))
    return all(abs(h - n / c) < 5 * sd for h in hist)


def _weights(kind, counts, cfg):
    if kind is None:
        return None
    return inverse_frequency(counts) if kind == "rw" else effective_number_weights(counts, cfg.rebalance.cb_beta)


# Presets made of a loss and a re-balancing that other presets test one by one (their pairing is checked by
# test_any_loss_combines_with_any_rebalancing), and M2m with gamma = 0, train in the slow suite only.
COMBINED = {"ldam-drw", "ldam-m2m", "balanced-softmax-m2m", "m2m-gamma0"}
# the presets with random draws of their own (the sampler, SMOTE's synthetic samples, M2m's noise and acceptance)
DETERMINISM_FAST = {"erm", "drs", "smote", "m2m"}


def _presets(fast):
    """Every preset, those not in ``fast`` marked slow."""
    assert fast <= set(METHODS.names()), fast - set(METHODS.names())
    return [n if n in fast else pytest.param(n, marks=pytest.mark.slow) for n in METHODS.names()]


def test_every_rebalancer_has_expectations():
    from major2minor.registry import REBALANCERS

    assert set(REBALANCERS.names()) <= set(EXPECTED), "add the new re-balancing's promises to EXPECTED"


@pytest.mark.parametrize("name", _presets(set(METHODS.names()) - COMBINED))
def test_method_trains_with_finite_losses_and_metrics(runs, name):
    cfg, summary, history = runs(name)
    assert cfg.method == name and len(history) == EPOCHS
    for row in history:
        assert math.isfinite(row["train_loss"]) and math.isfinite(row["val_loss"]), row
    for split in ("test_at_best", "test_at_last"):
        for metric in ("bacc", "gm", "acc"):
            assert 0.0 <= summary[split][metric] <= 1.0, (split, metric, summary[split][metric])


@pytest.mark.parametrize("name", _presets(set(METHODS.names()) - COMBINED))
def test_method_sees_and_weighs_what_it_promises(runs, name):
    cfg, summary, history = runs(name)
    counts = summary["train_counts"]
    n, c, n_max = sum(counts), len(counts), max(counts)
    sample_before, sample_after, weight_before, weight_after = EXPECTED[cfg.rebalance.name]
    for row in history:
        after = row["epoch"] > T0  # epochs are numbered from 1: epoch T0 + 1 is the first re-balanced one
        seen = row["seen_per_class"]
        sampling = sample_after if after else sample_before
        if sampling == "all":
            assert seen == counts, (row["epoch"], seen, counts)
        elif sampling == "uniform":
            assert sum(seen) == n and _near_uniform(seen, n), (row["epoch"], seen)
            assert not _near_uniform(counts, n)  # the check can tell the two apart
        elif sampling == "n_max":
            assert seen == [n_max] * c, (row["epoch"], seen)
        expected = _weights(weight_after if after else weight_before, counts, cfg)
        if expected is None:
            assert row["class_weights"] is None, (row["epoch"], row["class_weights"])
        else:
            np.testing.assert_allclose(row["class_weights"], expected, atol=2e-6)
            assert sum(row["class_weights"]) == pytest.approx(c, abs=1e-4)
        if cfg.rebalance.name == "m2m":  # translation runs from T0 on, not before
            assert ("m2m_slots" in row and row["m2m_slots"] > 0) == after, row.get("m2m_slots")
            if after:
                assert sum(row["m2m_accepted_per_class"]) == row["m2m_accepted"] <= row["m2m_slots"]
                if not cfg.m2m.reject:
                    assert row["m2m_accepted"] == row["m2m_slots"]
    weights = load_checkpoint(Path(summary["run_dir"]) / "last.pt")["model"]
    assert ("linear.bias" not in weights) == (cfg.loss.name == "ldam")  # LDAM trained the cosine head


@pytest.mark.parametrize("name", _presets(DETERMINISM_FAST))
def test_method_is_deterministic_with_a_fixed_seed(runs, name):
    _, a, history_a = runs(name, "a")
    _, b, history_b = runs(name, "b")
    assert a["test_at_best"] == b["test_at_best"] and a["val_at_best"] == b["val_at_best"]
    assert a["test_at_last"] == b["test_at_last"] and a["best_epoch"] == b["best_epoch"]
    assert _strip(history_a) == _strip(history_b)


@pytest.mark.parametrize("loss, rebalance", [("focal", "drs"), ("balanced-softmax", "cbrw"), ("ldam", "ros")])
def test_any_loss_combines_with_any_rebalancing(runs, loss, rebalance):
    cfg, summary, history = runs("erm", f"{loss}+{rebalance}", f"loss={loss}", f"rebalance={rebalance}")
    assert (cfg.loss.name, cfg.rebalance.name) == (loss, rebalance)
    counts = summary["train_counts"]
    sample_before, sample_after, weight_before, weight_after = EXPECTED[rebalance]
    last = history[-1]
    assert all(math.isfinite(r["train_loss"]) for r in history)
    if sample_after == "uniform":
        assert _near_uniform(last["seen_per_class"], sum(counts))
    if weight_after is not None:
        np.testing.assert_allclose(last["class_weights"], _weights(weight_after, counts, cfg), atol=2e-6)


def test_cli_lists_every_method_with_its_own_help(capsys):
    from major2minor.cli import main

    assert main(["list", "methods"]) == 0
    lines = capsys.readouterr().out.splitlines()
    listed = {line.split()[0]: line.split(None, 1)[1] for line in lines if line.strip()}
    paper = {
        "erm",
        "ros",
        "smote",
        "rw",
        "cb-rw",
        "drs",
        "drw",
        "focal",
        "ldam",
        "ldam-drw",
        "m2m",
        "ldam-m2m",
        "m2m-self",
        "m2m-no-reject",
        "balanced-softmax",
    }
    assert paper <= set(listed) and set(listed) == set(METHODS.names())
    for name, help_text in listed.items():
        assert help_text == METHODS.entries()[METHODS.names().index(name)].help
        assert "optional extra config overrides" not in help_text, name  # not the Preset class docstring
