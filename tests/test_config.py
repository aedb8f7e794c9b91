from pathlib import Path

import pytest

import major2minor
from major2minor.config import ConfigError, list_recipes, load_config
from major2minor.registry import UnknownNameError


def test_defaults_load_digits_recipe():
    cfg = load_config()
    assert cfg.data.name == "digits-lt" and cfg.method == "erm"


def test_override_types_are_coerced():
    cfg = load_config(None, ["optim.lr=0.05", "optim.milestones=[3,4]", "train.seed=7", "m2m.reject=false"])
    assert cfg.optim.lr == 0.05 and cfg.optim.milestones == [3, 4] and cfg.train.seed == 7
    assert cfg.m2m.reject is False


def test_unknown_key_suggests_closest():
    with pytest.raises(ConfigError, match=r"optim\.lrr.*Did you mean 'optim\.lr'"):
        load_config(None, ["optim.lrr=0.1"])


def test_wrong_type_names_key_and_value():
    with pytest.raises(ConfigError, match=r"train\.epochs='ten' must be an integer"):
        load_config(None, ["train.epochs=ten"])
    with pytest.raises(ConfigError, match=r"train\.epochs=2\.5 must be an integer"):
        load_config(None, ["train.epochs=2.5"])


def test_method_preset_and_explicit_override_order():
    cfg = load_config(None, ["loss=focal", "method=ldam-drw"])  # explicit loss wins over the preset
    assert cfg.loss.name == "focal" and cfg.rebalance.name == "drw"
    cfg = load_config(None, ["method=m2m-no-reject"])
    assert cfg.rebalance.name == "m2m" and cfg.m2m.reject is False


def test_unknown_method_lists_valid_names():
    with pytest.raises(UnknownNameError, match=r"method='m2n'.*Did you mean 'm2m'"):
        load_config(None, ["method=m2n"])


def test_unknown_dataset_model_loss():
    with pytest.raises(UnknownNameError, match="data.name='cifar11-lt'"):
        load_config(None, ["data.name=cifar11-lt"])
    with pytest.raises(UnknownNameError, match="model.name='resnet33'"):
        load_config(None, ["model.name=resnet33"])
    with pytest.raises(UnknownNameError, match="loss.name='foca'"):
        load_config(None, ["loss=foca"])


def test_cross_field_errors():
    with pytest.raises(ConfigError, match="train.deferred_epoch=30 must be in"):
        load_config(None, ["method=drs", "train.epochs=30", "train.deferred_epoch=30"])
    with pytest.raises(ConfigError, match="data.ratio=0.5 must be >= 1"):
        load_config(None, ["data.ratio=0.5"])
    with pytest.raises(ConfigError, match="conflicts"):
        load_config(None, ["method=m2m", "m2m.self_generator=true", "m2m.generator=[a.pt]"])
    with pytest.raises(ConfigError, match="needs the cosine"):
        load_config(None, ["method=ldam", "model.head=linear"])


def test_every_shipped_recipe_loads():
    shipped = sorted(p.stem for p in (Path(major2minor.__file__).parent / "recipes").glob("*.yaml"))
    assert "cifar10-lt" in shipped and list_recipes() == shipped  # an empty list would check nothing
    for name in shipped:
        assert load_config(name).recipe == name


def test_unknown_recipe():
    with pytest.raises(ConfigError, match="built-in"):
        load_config("cifar-10-lt")


def test_resolved_method_follows_the_loss_and_rebalancing():
    assert load_config(None, ["loss=focal", "rebalance=rw"]).method == "focal+rw"
    assert load_config(None, ["method=erm", "rebalance=drs"]).method == "drs"
    assert load_config(None, ["method=m2m", "m2m.reject=false"]).method == "m2m-no-reject"
    assert load_config(None, ["method=m2m-self", "m2m.self_generator=false"]).method == "m2m"
    assert load_config(None, ["method=ldam-m2m"]).method == "ldam-m2m"


def test_one_knob_scales_the_whole_schedule():
    cfg = load_config("cifar10-lt", ["train.schedule_scale=0.2"])
    assert (cfg.train.epochs, cfg.train.deferred_epoch, cfg.optim.milestones, cfg.optim.warmup_epochs) == (
        40,
        32,
        [32, 36],
        1,
    )
    assert cfg.train.schedule_scale == 1.0  # applied: config.yaml records the schedule that runs
    tiny = load_config("cifar10-lt", ["method=m2m", "train.schedule_scale=0.025"])
    assert tiny.train.epochs == 5 and 0 <= tiny.train.deferred_epoch < 5 and max(tiny.optim.milestones) < 5


def test_milestones_past_the_end_are_warned_about():
    with pytest.warns(
        UserWarning, match=r"optim\.milestones=\[160, 180\]: \[160, 180\] lie at or past train\.epochs=5"
    ):
        load_config("cifar10-lt", ["train.epochs=5"])


def test_an_ablation_asked_for_by_name_keeps_its_name():
    assert load_config(None, ["method=m2m", "m2m.gamma=0"]).method == "m2m-gamma0"
    assert load_config(None, ["method=m2m-no-reject", "m2m.gamma=0"]).method == "m2m-no-reject"
    assert load_config(None, ["method=m2m-gamma0", "m2m.reject=false"]).method == "m2m-gamma0"
