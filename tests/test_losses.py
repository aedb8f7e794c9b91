"""Losses against hand-computed values (design section 3; public LDAM-DRW / M2m conventions)."""

import math

import pytest
import torch
import torch.nn.functional as F

from major2minor.config import ConfigError, LossConfig, load_config
from major2minor.losses import build_loss, ldam_margins
from major2minor.models import NormedLinear, build_model
from major2minor.registry import LOSSES


def make(name, counts=(100, 16, 1), **kw):
    cfg = LossConfig(name=name, **kw)
    return LOSSES.get(name)(cfg, list(counts))


LOGITS = torch.tensor([[2.0, 0.0, -1.0], [0.3, -0.2, 0.9], [-1.0, 1.5, 0.1], [0.0, 0.0, 0.0]])
TARGET = torch.tensor([0, 2, 1, 2])
WEIGHT = torch.tensor([0.2, 0.7, 2.1])


# --- every loss: per-sample values, w_y * loss, batch mean taken by the engine ----------------------


@pytest.mark.parametrize("name", LOSSES.names())
def test_every_loss_is_per_sample_finite_and_weighted_per_sample(name):
    logits = LOGITS.clamp(-1, 1) if name == "ldam" else LOGITS  # LDAM sees cosine logits
    loss = make(name)
    plain = loss(logits, TARGET)
    assert plain.shape == (4,) and torch.isfinite(plain).all() and (plain >= 0).all()
    weighted = loss(logits, TARGET, WEIGHT)
    if name == "focal":
        # public code: p = exp(-w_y * CE), so the focal factor itself changes with w
        ce_w = WEIGHT[TARGET] * F.cross_entropy(logits, TARGET, reduction="none")
        expected = (1 - torch.exp(-ce_w)) * ce_w
    else:
        expected = WEIGHT[TARGET] * plain  # not divided by sum of w_y
    torch.testing.assert_close(weighted, expected)


def test_build_loss_uses_config_name_and_counts():
    cfg = load_config("digits-lt", ["method=ldam"])
    counts = [100, 50, 10]
    loss = build_loss(cfg, counts)
    assert type(loss).__name__ == "LDAMLoss"
    torch.testing.assert_close(loss.margins, ldam_margins(counts, 0.5))


# --- CE and focal ---------------------------------------------------------------------------------


def test_ce_matches_hand_computation():
    z = math.exp(2) + 1 + math.exp(-1)
    assert make("ce")(LOGITS[:1], TARGET[:1]).item() == pytest.approx(-math.log(math.exp(2) / z), rel=1e-6)


@pytest.mark.parametrize("weight", [None, WEIGHT])
def test_focal_with_gamma_zero_equals_ce(weight):
    logits = LOGITS.clone().requires_grad_(True)
    focal = make("focal", focal_gamma=0.0)(logits, TARGET, weight)
    (g_focal,) = torch.autograd.grad(focal.sum(), logits)
    ce = make("ce")(logits, TARGET, weight)
    (g_ce,) = torch.autograd.grad(ce.sum(), logits)
    torch.testing.assert_close(focal, ce)
    torch.testing.assert_close(g_focal, g_ce)


def test_focal_gamma_one_matches_hand_computation():
    # logits (2, 0, -1), target 0: p = e^2 / (e^2 + 1 + e^-1) = 0.84379..., CE = -log p = 0.169846...
    # focal = (1 - p)^1 * CE = 0.0265308...
    assert make("focal")(LOGITS[:1], TARGET[:1]).item() == pytest.approx(0.026530842582077215, rel=1e-5)
    p = math.exp(2) / (math.exp(2) + 1 + math.exp(-1))
    assert make("focal", focal_gamma=2.0)(LOGITS[:1], TARGET[:1]).item() == pytest.approx(
        (1 - p) ** 2 * -math.log(p), rel=1e-5
    )


def test_focal_default_gamma_is_one():
    assert LossConfig().focal_gamma == 1.0


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0])
def test_focal_gradient_finite_on_confident_sample(gamma):
    # ce rounds to 0 here; the public code's (1 - p)^gamma has an infinite derivative for gamma < 1
    logits = torch.tensor([[40.0, 0.0, 0.0], [0.5, 0.1, 0.0]], requires_grad=True)
    loss = make("focal", focal_gamma=gamma)(logits, torch.tensor([0, 1])).sum()
    (grad,) = torch.autograd.grad(loss, logits)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()


def test_focal_negative_gamma_refused():
    with pytest.raises(ValueError, match="focal_gamma"):
        make("focal", focal_gamma=-1.0)


# --- LDAM -----------------------------------------------------------------------------------------


def test_ldam_margins_proportional_to_n_to_minus_quarter_with_max_equal_max_margin():
    counts = [100, 16, 1]
    m = ldam_margins(counts, 0.5)
    # by hand: 100^(-1/4) = 0.31623, 16^(-1/4) = 0.5, 1^(-1/4) = 1 -> scaled so the largest is 0.5
    torch.testing.assert_close(m, torch.tensor([0.15811388, 0.25, 0.5]))
    ratio = m * torch.tensor(counts, dtype=torch.float32) ** 0.25
    torch.testing.assert_close(ratio, torch.full((3,), 0.5))  # m_c * N_c^(1/4) constant
    assert m.max().item() == pytest.approx(0.5)
    assert ldam_margins([5000, 2997, 50], 0.3).max().item() == pytest.approx(0.3)


def test_ldam_loss_matches_hand_computation():
    # cosine logits (0.5, 0.2, -0.1), target 1 (N=16, margin 0.25), scale 30:
    # s * (z - m e_y) = (15, -1.5, -3); loss = 1.5 + log(e^15 + e^-1.5 + e^-3) = 16.50000008...
    loss = make("ldam")(torch.tensor([[0.5, 0.2, -0.1]]), torch.tensor([1]))
    assert loss.item() == pytest.approx(16.500000083486007, rel=1e-6)
    # the margin only touches the target logit: target 0 (margin 0.158) by hand
    z = [30 * (0.5 - 0.15811388300841897), 6.0, -3.0]
    expected = -z[0] + math.log(sum(math.exp(v) for v in z))
    assert make("ldam")(torch.tensor([[0.5, 0.2, -0.1]]), torch.tensor([0])).item() == pytest.approx(expected, rel=1e-5)


def test_ldam_defaults_are_the_papers():
    cfg = LossConfig()
    assert cfg.ldam_max_margin == 0.5 and cfg.ldam_scale == 30.0


def test_ldam_picks_cosine_head_automatically_and_refuses_a_linear_one():
    cfg = load_config("digits-lt", ["method=ldam"])
    model = build_model(cfg, 10, (1, 8, 8))
    assert any(isinstance(m, NormedLinear) for m in model.modules())
    logits = model(torch.rand(4, 1, 8, 8))
    assert logits.abs().max() <= 1.0 + 1e-5  # cosine logits
    erm = build_model(load_config("digits-lt", ["method=erm"]), 10, (1, 8, 8))
    assert not any(isinstance(m, NormedLinear) for m in erm.modules())
    with pytest.raises(ConfigError, match="model.head=linear"):
        load_config("digits-lt", ["method=ldam-drw", "model.head=linear"])


# --- Balanced Softmax / logit adjustment ------------------------------------------------------------


def test_balanced_softmax_matches_hand_computation():
    # counts (3, 1): prior (0.75, 0.25); logits (0, 0), target 1 -> -log 0.25 = log 4
    loss = make("balanced-softmax", counts=(3, 1))(torch.zeros(1, 2), torch.tensor([1]))
    assert loss.item() == pytest.approx(math.log(4), rel=1e-6)
    half = make("balanced-softmax", counts=(3, 1), tau=0.5)(torch.zeros(1, 2), torch.tensor([1]))
    assert half.item() == pytest.approx(
        math.log(1 + math.sqrt(3)), rel=1e-6
    )  # -log(sqrt(.25) / (sqrt(.75) + sqrt(.25)))


def test_balanced_softmax_tau_zero_equals_ce():
    torch.testing.assert_close(make("balanced-softmax", tau=0.0)(LOGITS, TARGET), make("ce")(LOGITS, TARGET))


@pytest.mark.parametrize("name", LOSSES.names())
def test_every_loss_takes_integer_targets_of_any_type_and_refuses_float_ones(name):
    logits = LOGITS.clamp(-1, 1) if name == "ldam" else LOGITS
    loss = make(name)
    expected = loss(logits, TARGET, WEIGHT)
    for dtype in (torch.int32, torch.int16, torch.uint8):
        assert torch.equal(loss(logits, TARGET.to(dtype), WEIGHT), expected)
    assert torch.equal(loss(logits, target=TARGET.to(torch.int32)), loss(logits, TARGET))
    with pytest.raises(ValueError, match=r"target must be integer class indices 0\.\.C-1, got a float32 tensor"):
        loss(logits, TARGET.float())
