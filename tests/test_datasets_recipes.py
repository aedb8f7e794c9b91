"""Every shipped recipe loads, and the paper's recipes carry the numbers of design section 4."""

import pytest

from major2minor.config import RECIPE_DIR, list_recipes, load_config
from major2minor.registry import DATASETS, MODELS


@pytest.mark.parametrize("name", list_recipes())
def test_every_shipped_recipe_loads(name):
    cfg = load_config(name)
    assert cfg.data.name in DATASETS and cfg.model.name in MODELS
    header = (RECIPE_DIR / f"{name}.yaml").read_text().splitlines()[:12]
    assert any("m2m train" in line for line in header if line.startswith("#")), "launch command in the header"


# data set -> (model, batch, weight decay, epochs, milestones, decay, warm-up, deferred epoch)
PAPER = {
    "cifar10-lt": ("resnet32", 128, 2e-4, 200, [160, 180], 0.01, 5, 160),
    "cifar100-lt": ("resnet32", 128, 2e-4, 200, [160, 180], 0.01, 5, 160),
    "celeba5": ("resnet32", 128, 2e-4, 90, [30, 60], 0.1, 0, 60),
    "sun397": ("preact_resnet18", 128, 2e-4, 90, [30, 60], 0.1, 0, 60),
    "twitter-pos": ("mlp", 64, 5e-5, 15, [10], 0.1, 0, 10),
    "reuters": ("mlp", 64, 5e-5, 15, [10], 0.1, 0, 10),
    "imagenet-lt": ("resnet50", 256, 1e-4, 200, [160, 180], 0.1, 0, 160),
}


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_recipes_follow_section_4(name):
    cfg = load_config(name)
    model, batch, wd, epochs, milestones, decay, warmup, deferred = PAPER[name]
    assert cfg.data.name == name and cfg.model.name == model
    assert cfg.train.batch_size == batch and cfg.optim.weight_decay == pytest.approx(wd)
    assert cfg.train.epochs == epochs and cfg.optim.milestones == milestones and cfg.optim.decay == decay
    assert cfg.optim.warmup_epochs == warmup and cfg.train.deferred_epoch == deferred
    assert cfg.optim.lr == 0.1 and cfg.optim.momentum == 0.9
    if model == "mlp":
        assert cfg.model.hidden == [256]


def test_cifar_and_split_specific_recipe_values():
    c10 = load_config("cifar10-lt")
    assert (c10.data.profile, c10.data.ratio, c10.data.n_max) == ("longtail", 100, 5000)
    assert load_config("cifar100-lt").data.n_max == 500
    sun = load_config("sun397").data
    assert (sun.val_per_class, sun.test_per_class, sun.image_size, sun.profile) == (10, 40, 32, "natural")
    assert load_config("imagenet-lt").data.image_size == 128
