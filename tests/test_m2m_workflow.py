"""The two-stage workflow, generator caching, official checkpoints, statistics in the log."""

import csv
from pathlib import Path

import pytest
import torch

from major2minor.checkpoint import CheckpointError
from major2minor.config import load_config
from major2minor.models import build_model
from major2minor.pipeline import train


def _official_resnet32_keys():
    keys = ["conv_1_3x3.weight"] + [
        f"bn_1.{p}" for p in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    ]
    for s in (1, 2, 3):
        for b in range(5):
            for layer in ("conv_a", "bn_a", "conv_b", "bn_b"):
                if layer.startswith("conv"):
                    keys.append(f"stage_{s}.{b}.{layer}.weight")
                else:
                    keys += [
                        f"stage_{s}.{b}.{layer}.{p}"
                        for p in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
                    ]
    return keys + ["linear.weight", "linear.bias"]


def test_resnet32_state_dict_matches_official_layout():
    cfg = load_config(None, ["model.name=resnet32"])
    net = build_model(cfg, 10, (3, 32, 32))
    assert list(net.state_dict()) == _official_resnet32_keys()
    assert sum(p.numel() for p in net.parameters()) == 464154  # ResNet-32, 10 classes (0.46M)


def _m2m_cfg(tmp_path, *extra):
    return load_config(
        "digits-lt",
        [
            "method=m2m",
            "train.epochs=4",
            "train.deferred_epoch=2",
            "optim.warmup_epochs=1",
            "optim.milestones=[3]",
            "train.progress=none",
            "m2m.beta=0.9",
            "m2m.gamma=0.01",
            "m2m.steps=3",
            f"run.root={tmp_path / 'runs'}",
            *extra,
        ],
    )


def test_two_stage_workflow_with_run_dir_generator(tmp_path):
    g_cfg = load_config("digits-lt", ["train.epochs=3", "train.progress=none", f"run.dir={tmp_path / 'g'}"])
    train(g_cfg, log=None)
    messages = []
    summary = train(_m2m_cfg(tmp_path, f"m2m.generator=[{tmp_path / 'g'}]"), log=messages.append)
    assert summary["m2m"]["slots"] > 0 and summary["m2m"]["accepted"] > 0
    assert any("M2m: translating from epoch 3" in m and "per epoch" in m for m in messages)
    rows = list(csv.DictReader(open(tmp_path / "runs" / "digits-lt" / "m2m" / "seed0" / "log.csv")))
    assert rows[0]["m2m_acceptance"] == "" and rows[1]["m2m_acceptance"] == ""  # ERM before T0
    for row in rows[2:]:
        assert int(row["m2m_slots"]) > 0 and 0 <= float(row["m2m_acceptance"]) <= 1
        assert len(row["m2m_accepted_per_class"].split()) == 10
        assert float(row["m2m_seconds"]) > 0
        # what the model saw after T0 is the over-sampled stream: the tail is no longer rare
        seen = [int(v) for v in row["seen_per_class"].split()]
        assert seen[-1] > 5 * 2


def test_missing_generator_trains_erm_g_once_and_caches_it(tmp_path):
    first = []
    train(_m2m_cfg(tmp_path), log=first.append)
    assert any("training the ERM generator" in m for m in first)
    second = []
    train(_m2m_cfg(tmp_path, "train.seed=1"), log=second.append)  # another seed: its own g
    assert any("training the ERM generator" in m for m in second)
    third = []
    train(_m2m_cfg(tmp_path, f"run.dir={tmp_path / 'again'}"), log=third.append)
    assert any("using cached ERM generator" in m for m in third)
    assert len(list((tmp_path / "runs" / ".generators").glob("*/seed*"))) == 2


def _official_checkpoint(path, num_classes=10, in_ch=1):
    cfg = load_config(None, ["model.name=resnet32"])
    net = build_model(cfg, num_classes, (in_ch, 8, 8))
    torch.save(
        {"net": net.state_dict(), "optimizer": {}, "acc": 50.0, "epoch": 159, "rng_state": torch.get_rng_state()}, path
    )
    return net


@pytest.mark.slow  # ResNet-32 trained with an official g; loading it is checked in test_security
def test_official_m2m_checkpoint_loads_as_generator(tmp_path, monkeypatch):
    official = _official_checkpoint(tmp_path / "ckpt_erm.t7")
    cfg = _m2m_cfg(
        tmp_path,
        "model.name=resnet32",
        f"m2m.generator=[{tmp_path / 'ckpt_erm.t7'}]",
        "train.epochs=3",
        "train.deferred_epoch=2",
        "m2m.steps=1",
    )
    import major2minor.methods.generator as generator

    seen = {}
    real_load = generator.load_generator

    def spy(path, *args):
        seen["g"] = real_load(path, *args)
        return seen["g"]

    monkeypatch.setattr(generator, "load_generator", spy)
    train(cfg, log=None)
    for k, v in official.state_dict().items():
        assert torch.equal(seen["g"].state_dict()[k], v)


def test_generator_with_wrong_class_count_is_refused(tmp_path):
    _official_checkpoint(tmp_path / "c5.t7", num_classes=5)
    cfg = _m2m_cfg(tmp_path, "model.name=resnet32", f"m2m.generator=[{tmp_path / 'c5.t7'}]")
    with pytest.raises(CheckpointError, match="linear.weight.*class count"):
        train(cfg, log=None)


def test_generator_with_wrong_architecture_is_refused(tmp_path):
    _official_checkpoint(tmp_path / "r32.t7")
    cfg = _m2m_cfg(tmp_path, f"m2m.generator=[{tmp_path / 'r32.t7'}]")  # the run's model is cnn
    with pytest.raises(CheckpointError, match="does not fit model"):
        train(cfg, log=None)


def test_generator_trained_on_other_counts_warns(tmp_path):
    g_cfg = load_config(
        "digits-lt", ["train.epochs=1", "train.progress=none", "data.ratio=5", f"run.dir={tmp_path / 'g5'}"]
    )
    train(g_cfg, log=None)
    with pytest.warns(UserWarning, match="class counts"):
        train(_m2m_cfg(tmp_path, f"m2m.generator=[{tmp_path / 'g5'}]", "train.epochs=3"), log=None)


@pytest.mark.slow  # the presets also run in test_methods_generic
def test_m2m_ablation_presets_run(tmp_path):
    for method in ("m2m-self", "m2m-no-reject", "ldam-m2m"):
        cfg = _m2m_cfg(tmp_path, f"method={method}", "train.epochs=3")
        s = train(cfg, log=None)
        assert s["m2m"]["slots"] > 0
        if method == "m2m-no-reject":
            assert s["m2m"]["acceptance"] == 1.0


def test_cached_generator_uses_f_training_split():
    from major2minor.pipeline import generator_config

    cfg = load_config("digits-lt", ["method=m2m", "train.seed=3", "data.selection=random"])
    g_cfg = generator_config(cfg)
    assert g_cfg.train.seed == 1003 and g_cfg.data.seed == 3
    from major2minor.data import build_dataset

    f_data = build_dataset(cfg.data, cfg.train.seed)
    g_data = build_dataset(g_cfg.data, g_cfg.data.seed)
    assert torch.equal(f_data.train.y, g_data.train.y) and torch.equal(f_data.train.x, g_data.train.x)


def test_generator_cache_follows_the_run_directory_when_no_root_is_given(tmp_path, monkeypatch):
    from major2minor.pipeline import generator_config

    monkeypatch.chdir(tmp_path)
    alone = load_config("digits-lt", ["method=m2m", f"run.dir={tmp_path / 'exp' / 'm2m'}"])
    assert Path(generator_config(alone).run.dir).parent.parent == tmp_path / "exp" / ".generators"
    rooted = load_config("digits-lt", ["method=m2m", f"run.root={tmp_path / 'grid'}", f"run.dir={tmp_path / 'x'}"])
    assert Path(generator_config(rooted).run.dir).parent.parent == tmp_path / "grid" / ".generators"
