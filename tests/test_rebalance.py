"""Re-balancing strategies: weights and sampling by hand, the T0 switch, the ROS stream, SMOTE."""

import numpy as np
import pytest
import torch

from major2minor.config import load_config
from major2minor.data import build_dataset
from major2minor.data.core import Split
from major2minor.data.sampling import epoch_indices
from major2minor.methods import effective_number_weights, inverse_frequency
from major2minor.registry import REBALANCERS


def rebalancer(name, counts, *overrides, t0=3):
    cfg = load_config("digits-lt", [f"rebalance={name}", "train.epochs=6", f"train.deferred_epoch={t0}", *overrides])
    return REBALANCERS.get(name)(cfg, counts)


# --- weights by hand ------------------------------------------------------------------------------


def test_inverse_frequency_by_hand():
    # 1/N = (.01, .02, .1), sum .13; times C/sum = 3/.13
    np.testing.assert_allclose(inverse_frequency([100, 50, 10]), [0.23076923, 0.46153846, 2.30769231], rtol=1e-7)
    assert inverse_frequency([7, 3, 1, 1]).sum() == pytest.approx(4.0)


def test_class_balanced_weights_by_hand():
    # effective numbers E_N = (1 - 0.999^N) / (1 - 0.999): 1 - 0.999^100 = 0.0952079, 1 - 0.999^10 = 0.0099551;
    # w proportional to 1/E: (10.5033, 100.4509) -> normalised to sum 2: (0.189327, 1.810673)
    np.testing.assert_allclose(effective_number_weights([100, 10], 0.999), [0.18932747, 1.81067253], rtol=1e-6)
    w = effective_number_weights([5000, 2997, 1796, 50], 0.999)
    assert w.sum() == pytest.approx(4.0) and np.all(np.diff(w) > 0)


def test_class_balanced_weights_limits():
    np.testing.assert_allclose(effective_number_weights([100, 10, 1], 0.0), [1.0, 1.0, 1.0])
    np.testing.assert_allclose(effective_number_weights([100, 10, 1], 1.0), inverse_frequency([100, 10, 1]))
    np.testing.assert_allclose(
        effective_number_weights([100, 10, 1], 1 - 1e-9), inverse_frequency([100, 10, 1]), rtol=1e-5
    )
    with pytest.raises(ValueError, match="cb_beta"):
        effective_number_weights([100, 10], 1.5)


# --- what each strategy promises, epoch by epoch ---------------------------------------------------

COUNTS = [100, 40, 10, 5]
RW = inverse_frequency(COUNTS)
CB = effective_number_weights(COUNTS, 0.999)


@pytest.mark.parametrize(
    "name, sample_before, sample_after, weight_before, weight_after",
    [
        ("none", None, None, None, None),
        ("ros", RW, RW, None, None),
        ("drs", None, RW, None, None),
        ("rw", None, None, RW, RW),
        ("cbrw", None, None, CB, CB),
        ("drw", None, None, None, CB),
        ("smote", None, None, None, None),
        ("m2m", None, RW, None, None),
    ],
)
def test_sampling_and_weights_switch_exactly_at_t0(name, sample_before, sample_after, weight_before, weight_after):
    r = rebalancer(name, COUNTS, t0=3)

    def same(got, want):
        return got is None if want is None else got is not None and np.allclose(got, want)

    for epoch in range(6):
        want_s, want_w = (sample_before, weight_before) if epoch < 3 else (sample_after, weight_after)
        assert same(r.sample_weights(epoch), want_s), (name, epoch, "sample")
        assert same(r.class_weights(epoch), want_w), (name, epoch, "weights")


def test_drw_weights_none_before_and_class_balanced_from_t0():
    r = rebalancer("drw", COUNTS, t0=2)
    assert r.class_weights(0) is None and r.class_weights(1) is None
    np.testing.assert_allclose(r.class_weights(2), CB)
    np.testing.assert_allclose(r.class_weights(5), CB)


def test_cb_beta_config_reaches_the_weights():
    r = rebalancer("cbrw", COUNTS, "rebalance.cb_beta=0.99")
    np.testing.assert_allclose(r.class_weights(0), effective_number_weights(COUNTS, 0.99))


def test_ros_stream_close_to_uniform_over_classes():
    counts = [500, 100, 20, 5]
    labels = torch.repeat_interleave(torch.arange(4), torch.tensor(counts))
    gen = torch.Generator().manual_seed(0)
    idx = epoch_indices(labels, inverse_frequency(counts), gen, num_samples=40_000)
    hist = torch.bincount(labels[idx], minlength=4).numpy()
    assert hist.sum() == 40_000
    # binomial sd = sqrt(40000 * .25 * .75) = 86.6; 5 sd = 433 around 10000
    assert np.all(np.abs(hist - 10_000) < 433), hist
    # one epoch of the engine's stream: as many draws as training samples, with replacement
    one = epoch_indices(labels, inverse_frequency(counts), gen)
    assert len(one) == sum(counts) and len(torch.unique(labels[one])) == 4
    plain = epoch_indices(labels, None, gen)  # ERM: a permutation
    assert torch.equal(torch.sort(plain).values, torch.arange(sum(counts)))


# --- SMOTE ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_train():
    cfg = load_config("digits-lt", [])
    return build_dataset(cfg.data, 0).train


def smote(train, *overrides, log=None):
    counts = np.bincount(train.y.numpy()).tolist()
    r = rebalancer("smote", counts, *overrides)
    messages = []

    class Ctx:
        pass

    ctx = Ctx()
    ctx.log = log or messages.append
    r.setup(ctx)
    return r, r.prepare_train(train, seed=0), messages


def test_smote_brings_every_class_to_n_max_and_keeps_uint8_images(digits_train):
    counts = np.bincount(digits_train.y.numpy())
    r, out, _ = smote(digits_train)
    assert np.bincount(out.y.numpy()).tolist() == [int(counts.max())] * len(counts)
    assert out.x.dtype == torch.uint8 and out.x.shape[1:] == digits_train.x.shape[1:]
    assert len(out) == counts.max() * len(counts)
    # originals come first and survive the float round-trip bit for bit
    n = len(digits_train)
    assert torch.equal(out.x[:n], digits_train.x) and torch.equal(out.y[:n], digits_train.y)
    # synthetic samples interpolate same-class samples: inside each class's per-pixel range
    for c in range(len(counts)):
        orig = digits_train.x[digits_train.y == c].int()
        new = out.x[n:][out.y[n:] == c].int()
        assert len(new) == counts.max() - counts[c]
        if len(new):
            assert (new >= orig.min(0).values).all() and (new <= orig.max(0).values).all()
    # most synthetic images are new, not copies (a class with 2+ distinct samples)
    minority = out.x[n:][out.y[n:] == len(counts) - 1].flatten(1)
    orig_minority = digits_train.x[digits_train.y == len(counts) - 1].flatten(1)
    copies = sum(any(torch.equal(s, o) for o in orig_minority) for s in minority)
    assert copies < len(minority) / 2


def test_smote_is_deterministic_for_a_seed(digits_train):
    _, a, _ = smote(digits_train)
    _, b, _ = smote(digits_train)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)


def test_smote_lowers_k_for_a_small_class_and_logs_it(digits_train):
    smallest = int(np.bincount(digits_train.y.numpy()).min())  # 4 or 5 on the digits-lt recipe
    r, out, messages = smote(digits_train, f"rebalance.smote_k={smallest}")  # needs smallest+1 samples
    assert r.k_used == smallest - 1
    assert any(f"k_neighbors={smallest - 1}" in m and "smote_k" in m for m in messages)
    assert np.bincount(out.y.numpy()).min() == np.bincount(digits_train.y.numpy()).max()
    r, _, messages = smote(digits_train, f"rebalance.smote_k={smallest - 1}")
    assert r.k_used == smallest - 1 and messages == []


def test_smote_single_sample_class_is_a_clear_error():
    x = torch.randn(12, 5)
    y = torch.tensor([0] * 8 + [1] * 3 + [2])
    with pytest.raises(ValueError, match=r"smote.*class\(es\) \[2\] have 1"):
        smote(Split(x, y))


def test_smote_on_float_features_keeps_float32():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(30, 6, generator=gen)
    y = torch.tensor([0] * 20 + [1] * 7 + [2] * 3)
    r, out, messages = smote(Split(x, y))
    assert out.x.dtype == torch.float32 and np.bincount(out.y.numpy()).tolist() == [20, 20, 20]
    assert r.k_used == 2 and messages  # class 2 has 3 samples -> k = 2
    torch.testing.assert_close(out.x[:30], x)


def test_drw_presets_follow_kaidic_and_the_m2m_variant_stays_reachable():
    """DRW / LDAM-DRW as kaidic/LDAM-DRW: beta = 0.9999 and sum(w*l)/sum(w); the M2m public code's
    variant (its beta, mean(w*l)) by settings.  Hand-computed: counts 100/10/1, beta 0.9999 give
    raw weights (1-b)/(1-b^N) = 0.010050, 0.100045, 1 -> normalised to sum 3: 0.027159, 0.270369, 2.702472;
    a batch with labels 0,0,1,2 and losses 1,2,3,4 has w*l = 0.027159, 0.054317, 0.811107, 10.809890."""
    import torch

    from major2minor.config import load_config
    from major2minor.registry import REBALANCERS

    kaidic = load_config("digits-lt", ["method=drw"])
    assert (kaidic.rebalance.cb_beta, kaidic.rebalance.weighted_mean) == (0.9999, "weights")
    assert load_config("digits-lt", ["method=ldam-drw"]).rebalance.weighted_mean == "weights"
    public = load_config("digits-lt", ["method=drw", "rebalance.cb_beta=0.999", "rebalance.weighted_mean=mean"])
    assert public.method == "ce+drw"

    counts = [100, 10, 1]
    w = effective_number_weights(counts, 0.9999)
    assert np.allclose(w, [0.027159, 0.270369, 2.702472], atol=2e-6)
    y = torch.tensor([0, 0, 1, 2])
    weight = torch.as_tensor(w, dtype=torch.float32)
    per_sample = weight[y] * torch.tensor([1.0, 2.0, 3.0, 4.0])  # what the loss returns with class weights
    drw = REBALANCERS.get("drw")
    assert float(drw(kaidic, counts).batch_loss(per_sample, y, weight)) == pytest.approx(3.865827, abs=1e-5)
    assert float(drw(public, counts).batch_loss(per_sample, y, weight)) == pytest.approx(2.925618, abs=1e-5)
    assert float(drw(kaidic, counts).batch_loss(per_sample, y, None)) == pytest.approx(float(per_sample.mean()))
